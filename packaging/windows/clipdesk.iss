; Inno Setup 6 script: a per-user installer for the clipdesk CPU bundle (dist\clipdesk\).
; Build the bundle first (packaging\build.py), then, from the repository root:
;   iscc /DAppVersion=0.1.0 packaging\windows\clipdesk.iss
; which writes dist\clipdesk-0.1.0-windows-x64-setup.exe. See packaging\windows\README.md.
;
; What it does: copies dist\clipdesk\* to %LOCALAPPDATA%\Programs\clipdesk (no admin rights),
; adds a Start menu entry (and a desktop one if ticked), and offers to start clipdesk.
; No file associations, no PATH change, nothing outside the user's profile.
; The user's library (%LOCALAPPDATA%\clipdesk: database, index, thumbnails, models) and photos
; are never touched by installing or upgrading. Uninstalling removes the installed files only,
; and asks (default: No) whether to delete the library as well.
;
; NOT TRIED: written on Linux, never compiled with ISCC nor run on Windows.

#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif
; The program the shortcuts start; /DAppExeName=clipdesk-gui.exe if the spec adds a windowed EXE.
#ifndef AppExeName
  #define AppExeName "clipdesk.exe"
#endif
#define AppName "clipdesk"
; Paths are relative to this script's folder.
#define BundleDir "..\..\dist\clipdesk"

[Setup]
; Never change the AppId: installers with the same AppId upgrade the same installation.
AppId={{F94EE8F0-BBF6-4C30-B3E1-9F9B7633A15A}
AppName={#AppName}
AppVersion={#AppVersion}
AppPublisher=clipdesk
; Per user, no elevation. (An all-users variant would need PrivilegesRequiredOverridesAllowed
; and DefaultDirName={autopf}\clipdesk; the library is per user either way.)
PrivilegesRequired=lowest
DefaultDirName={localappdata}\Programs\clipdesk
UsePreviousAppDir=yes
DisableProgramGroupPage=yes
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
MinVersion=10.0
ChangesAssociations=no
ChangesEnvironment=no
; A running clipdesk is asked to close before its files are replaced.
CloseApplications=yes
OutputDir=..\..\dist
OutputBaseFilename=clipdesk-{#AppVersion}-windows-x64-setup
; Not in the repository yet: make it from resources\icons\clipdesk-256.png (see the README).
SetupIconFile=..\..\resources\icons\clipdesk.ico
UninstallDisplayIcon={app}\{#AppExeName}
UninstallDisplayName={#AppName}
Compression=lzma2
SolidCompression=yes
WizardStyle=modern
#ifdef SignTool
; iscc "/Ssigntool=signtool.exe sign /fd sha256 /tr http://timestamp.digicert.com /td sha256 /a $f" /DSignTool=signtool ...
SignTool={#SignTool}
SignedUninstaller=yes
#endif

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[InstallDelete]
; An upgrade replaces the whole bundle, so that no DLL or plugin of the previous version stays
; beside the new ones. Only the bundle's own _internal folder inside the install folder.
Type: filesandordirs; Name: "{app}\_internal"

[Files]
Source: "{#BundleDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{autoprograms}\{#AppName}"; Filename: "{app}\{#AppExeName}"; WorkingDir: "{%USERPROFILE}"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\{#AppExeName}"; WorkingDir: "{%USERPROFILE}"; Tasks: desktopicon

[Run]
Filename: "{app}\{#AppExeName}"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent

[Code]
{ The library folder: platformdirs.user_data_dir("clipdesk", appauthor=False). }
function LibraryDir(): String;
begin
  Result := ExpandConstant('{localappdata}\clipdesk');
end;

{ The window's settings (QSettings, INI format, user scope). }
function SettingsFile(): String;
begin
  Result := ExpandConstant('{userappdata}\clipdesk\clipdesk.ini');
end;

{ True when Path is Folder or lies inside it. }
function IsSameOrInside(Path, Folder: String): Boolean;
var
  P, F: String;
begin
  P := AddBackslash(Lowercase(Path));
  F := AddBackslash(Lowercase(Folder));
  Result := Copy(P, 1, Length(F)) = F;
end;

function BadInstallDirMessage(Dir: String): String;
begin
  Result := '';
  if IsSameOrInside(Dir, LibraryDir()) then
    Result := 'Please choose another folder: ' + Dir + ' is (inside) your clipdesk library ('
      + LibraryDir() + '), which the program must not share.';
end;

function NextButtonClick(CurPageID: Integer): Boolean;
var
  Problem: String;
begin
  Result := True;
  if CurPageID = wpSelectDir then
  begin
    Problem := BadInstallDirMessage(WizardDirValue());
    if Problem <> '' then
    begin
      MsgBox(Problem, mbError, MB_OK);
      Result := False;
    end;
  end;
end;

{ Also covers silent installs with /DIR=. }
function PrepareToInstall(var NeedsRestart: Boolean): String;
begin
  Result := BadInstallDirMessage(ExpandConstant('{app}'));
end;

{ After the installed files are gone: offer to delete the library too (default No).
  A silent uninstall always keeps it. }
procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
var
  Dir: String;
begin
  if CurUninstallStep <> usPostUninstall then
    Exit;
  Dir := LibraryDir();
  if not DirExists(Dir) then
    Exit;
  if UninstallSilent() or IsSameOrInside(ExpandConstant('{app}'), Dir) then
  begin
    Log('Keeping the clipdesk library ' + Dir);
    Exit;
  end;
  if MsgBox('clipdesk is removed. Also delete your clipdesk library?' + #13#10#13#10
      + Dir + #13#10#13#10
      + 'It holds the library database (folders, tags), the search index, thumbnails and '
      + 'downloaded models. Your photos are not in it and are never touched, nor is a library '
      + 'you keep in another folder.' + #13#10#13#10
      + 'Choose No to keep it: installing clipdesk again will use it as it is.',
      mbConfirmation, MB_YESNO or MB_DEFBUTTON2) = IDYES then
  begin
    if DelTree(Dir, True, True, True) then
      Log('Deleted the clipdesk library ' + Dir)
    else
      MsgBox('Some of ' + Dir + ' could not be deleted (is clipdesk still running?). '
        + 'You can delete that folder by hand.', mbError, MB_OK);
    DeleteFile(SettingsFile());
    RemoveDir(ExtractFileDir(SettingsFile()));
  end
  else
    Log('Keeping the clipdesk library ' + Dir);
end;
