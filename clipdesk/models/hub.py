"""The model hub: whether it answers, what a file there is (its sha256 and size), and
fetching it into a ``.part`` file that a later run resumes.

Downloads take huggingface_hub's settings, as open_clip's own do (endpoint, ``HF_ENDPOINT``,
token, offline switch; proxies from the environment), and fetch with the standard library's
HTTP client (huggingface_hub's transport is its own business); the sha256 the hub serves as
the file's ETag is what the models folder checks a download against.
"""

from __future__ import annotations

import http.client
import shutil
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPMessage
from pathlib import Path
from typing import IO
from urllib.parse import urljoin, urlparse

from clipdesk import __version__
from clipdesk.errors import ClipdeskError, FetchFailure, ModelUnavailableError
from clipdesk.files import SHA256_HEX
from clipdesk.models import catalog
from clipdesk.models.catalog import CatalogEntry
from clipdesk.progress import CancelToken

CHUNK_SIZE = 1 << 20  # progress and cancel granularity of a download
MAX_DROPS = 5  # connection drops survived in one download, each resumed with a Range

ProgressCallback = Callable[[int, int], None]


class DownloadCancelled(ClipdeskError):
    """A download stopped by its cancel token; the partial file is kept for a resume."""


def no_network_error(
    what: str, reason: str = "no network", why: FetchFailure = "no_network"
) -> ModelUnavailableError:
    """The one error for a model that cannot be fetched (CLI, encoder and GUI alike): its
    message says, for a catalog model, which file to get from where, and the import command
    that takes it; its fields (``reason``, ``summary``: the same without the commands) let
    the window say it its own way."""
    entry = next(
        (e for e in catalog.CATALOG if e.spec in what or what.split(" ", 1)[0] == e.name), None
    )
    if entry is None:
        summary = f"could not download {what}: {reason}"
        advice = (
            "; import a weights file with "
            "`clipdesk models import --name NAME --arch ARCH --weights FILE` (or connect and "
            "run `clipdesk models download NAME`)"
        )
    else:
        summary = (
            f"could not download {what}: {reason}. On a computer with network, get "
            f"{' or '.join(entry.files)} from https://huggingface.co/{entry.hf_repo}/tree/"
            f"{entry.revision}"
        )
        advice = (
            f", then `clipdesk models import --name {entry.name} --arch "
            f"{entry.arch} --weights FILE` (or connect and run `clipdesk models download "
            f"{entry.name}`)"
        )
    return ModelUnavailableError(
        summary + advice, reason=why, summary=summary, by_hand=entry is not None
    )


def no_network_message(what: str, reason: str = "no network") -> str:
    """:func:`no_network_error`'s message."""
    return str(no_network_error(what, reason))


def hub_reachable(endpoint: str | None = None, timeout: float = 3.0) -> bool:
    """Whether the model hub (``endpoint``, else huggingface_hub's, which honours
    HF_ENDPOINT) answers at all: a fast answer offline instead of a minute of retries.
    False in huggingface_hub's offline mode (HF_HUB_OFFLINE)."""
    from huggingface_hub import constants  # not in the CPU bundle

    if constants.is_offline_mode():
        return False
    url = urlparse(endpoint or str(constants.ENDPOINT))
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout):
            return True
    except OSError:
        return False


# -- downloads ---------------------------------------------------------------------------


def locate(entry: CatalogEntry, endpoint: str | None) -> tuple[str, str, str, int]:
    """The file to fetch for ``entry``: (file name, URL, sha256, size), from a HEAD
    request; the safetensors file first, then open_clip's fallback, as open_clip does."""
    from huggingface_hub import constants, hf_hub_url  # not in the CPU bundle

    what = f"{entry.name} ({entry.spec})"
    if constants.is_offline_mode():
        raise no_network_error(what, "no network (HF_HUB_OFFLINE is set)", "offline")
    last_error: Exception | None = None
    for filename in entry.files:
        url = hf_hub_url(entry.hf_repo, filename, revision=entry.revision, endpoint=endpoint)
        try:
            meta = _file_metadata(url, float(constants.HF_HUB_ETAG_TIMEOUT))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                last_error = exc
                continue  # not published under this name: try the next one
            raise ModelUnavailableError(
                f"could not download {what}: the server at {_host(url)} answered "
                f"{exc.code} {exc.reason}"
            ) from exc
        except Exception as exc:
            if _is_network_error(exc):
                raise no_network_error(what) from exc
            raise
        etag = (meta.etag or "").lower()
        sha256 = entry.sha256 or (etag if SHA256_HEX.match(etag) else None)
        if sha256 is None:
            raise ModelUnavailableError(
                f"could not download {what}: the server at {_host(url)} gives no sha256 "
                f"for {filename}, so the download could not be verified"
            )
        if entry.sha256 and SHA256_HEX.match(etag) and etag != entry.sha256:
            raise ModelUnavailableError(
                f"could not download {what}: the server at {_host(url)} offers a different "
                f"file than the catalog's (sha256 {etag}, expected {entry.sha256})"
            )
        if meta.size is None:
            raise ModelUnavailableError(
                f"could not download {what}: the server at {_host(url)} gives no size "
                f"for {filename}"
            )
        return filename, url, sha256, int(meta.size)
    raise ModelUnavailableError(
        f"could not download {what}: {entry.hf_repo} has none of {', '.join(entry.files)} "
        f"({first_line(last_error) if last_error else 'not found'})"
    )


def fetch(
    url: str,
    part: Path,
    size: int,
    name: str,
    progress: ProgressCallback | None,
    cancel: CancelToken,
) -> None:
    """Fill ``part`` up to ``size`` bytes from ``url``, resuming from what it holds."""
    from huggingface_hub import constants  # not in the CPU bundle

    done = part.stat().st_size if part.exists() else 0
    if done > size:
        part.unlink()
        done = 0
    free = shutil.disk_usage(part.parent).free
    if free < size - done:
        raise ModelUnavailableError(
            f"not enough disk space for {name}: it needs {_mb(size - done)} more, "
            f"{part.parent} has {_mb(free)} free"
        )
    if constants.is_offline_mode():
        raise no_network_error(name, "no network (HF_HUB_OFFLINE is set)", "offline")
    drops = 0
    while done < size:
        headers = _hub_headers()
        headers["Accept-Encoding"] = "identity"  # byte ranges of the file, not of a gzip
        if done:
            headers["Range"] = f"bytes={done}-"
        request = urllib.request.Request(url, headers=headers)
        try:
            with _OPENER.open(request, timeout=float(constants.HF_HUB_DOWNLOAD_TIMEOUT)) as (
                response
            ):
                mode = "ab"
                if done and response.status != 206:
                    done, mode = 0, "wb"  # the server ignored the Range: start over
                with open(part, mode) as fh:
                    if progress is not None:
                        progress(done, size)
                    for chunk in iter(lambda: response.read(CHUNK_SIZE), b""):
                        if done + len(chunk) > size:
                            chunk = chunk[: size - done]  # more than advertised: never used
                        fh.write(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, size)
                        if cancel.cancelled:
                            raise DownloadCancelled(
                                f"download of {name} stopped at {done} of {size} bytes; run "
                                "it again to resume"
                            )
                        if done >= size:
                            break
        except urllib.error.HTTPError as exc:
            raise ModelUnavailableError(
                f"could not download {name}: the server at {_host(url)} answered "
                f"{exc.code} {exc.reason}; run the download again to resume"
            ) from exc
        except ClipdeskError:
            raise
        except Exception as exc:
            if not _is_network_error(exc):
                if isinstance(exc, OSError):
                    raise ModelUnavailableError(
                        f"cannot write {part}: {exc.strerror or exc}"
                    ) from exc
                raise
            drops += 1
            if drops > MAX_DROPS:
                raise no_network_error(
                    name,
                    f"the connection kept dropping ({done} of {size} bytes kept; run "
                    "the download again to resume)",
                    "connection_dropped",
                ) from exc
            time.sleep(min(0.2 * drops, 2.0))  # then resume with a Range from `done`
            continue
        if done < size:  # a clean end of the body, but short: resume
            drops += 1
            if drops > MAX_DROPS:
                raise ModelUnavailableError(
                    f"could not download {name}: the server at {_host(url)} keeps sending "
                    f"less than the {size} bytes it announced"
                )


def fetch_extra_files(entry: CatalogEntry, endpoint: str | None) -> None:
    """The files open_clip fetches at a model's first load, into huggingface_hub's cache."""
    if not entry.extra_files:
        return
    from huggingface_hub import hf_hub_download  # not in the CPU bundle

    for repo, filename in entry.extra_files:
        try:
            hf_hub_download(repo, filename, endpoint=endpoint)
        except Exception as exc:
            raise ModelUnavailableError(
                f"{entry.name}: the weights are downloaded, but its tokenizer file "
                f"{repo}/{filename} could not be: {first_line(exc)}; run the download "
                "again"
            ) from exc


# -- helpers -----------------------------------------------------------------------------


def _mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


def _host(url: str) -> str:
    parsed = urlparse(url)
    return parsed.netloc or url


def first_line(exc: BaseException | None) -> str:
    text = str(exc) if exc is not None else ""
    lines = [line for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


def _is_network_error(exc: BaseException) -> bool:
    """Connection refused, DNS failure, timeout or a dropped connection."""
    if isinstance(exc, urllib.error.HTTPError):
        return False  # the server answered
    return isinstance(
        exc, urllib.error.URLError | http.client.HTTPException | ConnectionError | TimeoutError
    )


def _hub_headers() -> dict[str, str]:
    """What the hub wants to see: who asks, and the user's token (huggingface_hub's own
    login, HF_TOKEN) where there is one."""
    from huggingface_hub import get_token  # not in the CPU bundle

    headers = {"User-Agent": f"clipdesk/{__version__}"}
    token = get_token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Redirects as huggingface_hub takes them: a HEAD follows only those on the same
    host (a renamed repository), since the hub's answer carries the file's sha256 and
    size; a GET follows to the CDN, without the token."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        here, there = urlparse(req.full_url), urlparse(urljoin(req.full_url, newurl))
        if there.scheme not in ("http", "https") or (here.scheme, there.scheme) == (
            "https",
            "http",
        ):
            return None  # no downgrade from https, no other protocol: the 3xx is an error
        same_host = (there.scheme, there.netloc) == (here.scheme, here.netloc)
        if req.get_method() == "HEAD" and not same_host:
            return None  # the redirect's own headers are the answer
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and req.get_method() == "HEAD":
            new.method = "HEAD"
        if new is not None and not same_host:
            new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_Redirects)


@dataclass(frozen=True)
class _FileMetadata:
    etag: str | None
    size: int | None


def _file_metadata(url: str, timeout: float) -> _FileMetadata:
    """The hub's HEAD answer for a file: its ETag (an LFS file's sha256) and size."""
    request = urllib.request.Request(url, headers=_hub_headers(), method="HEAD")
    request.add_header("Accept-Encoding", "identity")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            headers = response.headers
    except urllib.error.HTTPError as exc:
        if not 300 <= exc.code < 400:
            raise
        headers = exc.headers  # a redirect to the CDN: the hub's headers are the answer
    etag = headers.get("X-Linked-Etag") or headers.get("ETag")
    size = headers.get("X-Linked-Size") or headers.get("Content-Length")
    return _FileMetadata(
        etag.removeprefix("W/").strip('"') if etag else None,
        int(size) if size and size.isdigit() else None,
    )
