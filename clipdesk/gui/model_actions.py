"""Model actions from the window: download the default model, import a weights file or
an exported model, then use it; each off the GUI thread, with the window's own words."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QMessageBox, QProgressDialog

from clipdesk.errors import ClipdeskError, ModelUnavailableError
from clipdesk.gui.dialogs import ImportWeightsDialog, ModelCatalogDialog, confirm_license
from clipdesk.gui.window_base import WindowPart
from clipdesk.gui.words import sentence, unavailable_wording
from clipdesk.gui.workers import WorkerToken
from clipdesk.models.catalog import DEFAULT_NAME, catalog_entry
from clipdesk.models.export_files import ExportManifest, install_export
from clipdesk.progress import CancelToken
from clipdesk.wording import duration, human_size


class ModelActions(WindowPart):
    """The model part of the main window: File → Download model / Import…"""

    def choose_model_download(self) -> None:
        """File → Download model…: the catalog, with each model's license; a research-only
        license is confirmed before anything is downloaded."""
        dialog = ModelCatalogDialog(self.services.models.available(), self)
        if dialog.exec() != ModelCatalogDialog.DialogCode.Accepted:
            return
        entry = catalog_entry(dialog.selected_name() or "")
        if entry is None:
            return
        if entry.research_only and not confirm_license(self, entry):
            self.statusBar().showMessage(f"{entry.name} was not downloaded.", 8000)
            return
        self.download_model(entry.name, accept_license=entry.research_only)

    def download_model(self, name: str = DEFAULT_NAME, accept_license: bool = False) -> None:
        entry = catalog_entry(name)
        assert entry is not None, name
        dialog = QProgressDialog(
            f"Downloading {entry.arch} ({human_size(entry.size_bytes)})…", "Cancel", 0, 1000, self
        )
        dialog.setWindowTitle("Download model")
        dialog.setMinimumDuration(0)
        dialog.setAutoClose(False)
        started = time.monotonic()

        def fetch(token: WorkerToken) -> object:
            models = self.services.models
            try:
                # accept_license: the person confirmed a research-only license
                return models.download(
                    entry.name, lambda *step: token.report(step), token, accept_license
                )
            except ModelUnavailableError as exc:
                if exc.reason is None:
                    raise
                # Said the window's way from the error's fields, here where the error is
                # at hand (what reaches the GUI thread is the sentence).
                raise ClipdeskError(unavailable_wording(exc)) from exc

        def moved(step: tuple[int, int]) -> None:
            done, total = step
            dialog.setValue(int(1000 * done / total) if total else 0)
            rate = done / max(time.monotonic() - started, 1e-6)
            left = f", about {duration((total - done) / rate)} left" if rate > 0 else ""
            dialog.setLabelText(
                f"Downloading {entry.arch}: {human_size(done)} of {human_size(total)}{left}"
            )

        def done(_: object) -> None:
            dialog.close()
            self.statusBar().showMessage(f"{entry.arch} is ready.", 8000)
            self.refresh_status(then_index=True)

        def failed(message: str) -> None:
            dialog.close()
            QMessageBox.warning(self, "Download failed", sentence(message))

        worker = self.runner.start(
            fetch, name="download", on_yield=moved, on_success=done, on_failure=failed
        )
        dialog.canceled.connect(worker.cancel)
        dialog.show()

    def import_weights(self) -> None:
        dialog = ImportWeightsDialog(self)
        if dialog.exec() != ImportWeightsDialog.DialogCode.Accepted:
            return
        weights = dialog.file_edit.text().strip()
        arch = dialog.arch_combo.currentText().strip()
        config = dialog.config_edit.text().strip() or None
        name = dialog.name_edit.text().strip() or "imported"
        if not weights:
            return
        device = self.device  # the settings are read here, on the GUI thread

        def register(_: CancelToken) -> str:
            spec = self.services.models.import_model(
                name, Path(weights), Path(config) if config else None, None if config else arch
            )
            return self.services.use_model(spec, device)

        self._run_import(register, "Importing the weights file…")

    def _run_import(self, job: Callable[[CancelToken], str], message: str) -> None:
        """Run a model import off the GUI thread; then use the model and index with it."""

        def done(outcome: str) -> None:
            self.statusBar().showMessage(outcome, 10000)
            self.refresh_status(then_index=True)

        def failed(reason: str) -> None:
            QMessageBox.warning(self, "Import failed", reason)

        self.statusBar().showMessage(message)
        self.run(job, done, "import", failed)

    def import_exported(self) -> None:
        """Install an exported model folder (``clipdesk models export``) and use it."""
        folder = QFileDialog.getExistingDirectory(self, "Import an exported model")
        if not folder:
            return
        device = self.device  # the settings are read here, on the GUI thread

        def install(_: CancelToken) -> str:
            installed = install_export(Path(folder))
            spec = ExportManifest.read(installed).spec
            return self.services.use_model(spec, device)

        self._run_import(install, "Checking and copying the exported model…")
