"""Job control for the window: the long jobs (scan, index, tag) on a thread of their own,
their progress in the status bar, pause, resume and cancel, and what the window does when
one ends."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QMessageBox

from clipdesk.gui.dialogs import LabelSetDialog
from clipdesk.gui.window_base import WindowPart
from clipdesk.progress import CancelToken, JobWarning, Progress
from clipdesk.wording import duration

log = logging.getLogger(__name__)


class JobControl(WindowPart):
    """The job part of the main window: one job at a time, shown in the status bar."""

    def _show_job_controls(self, visible: bool) -> None:
        for widget in (self.job_progress, self.pause_button, self.cancel_button):
            widget.setVisible(visible)

    def _start_job(self, kind: str, fn: Callable[[CancelToken], Any]) -> bool:
        if self.job is not None:
            self.statusBar().showMessage("Another job is running; it must finish first.", 5000)
            return False
        self.job_kind = kind
        self._job_phase = None
        self._job_stopped = False
        self.resume_button.hide()
        self.pause_button.setText("Pause")
        self._show_job_controls(True)
        self.job_progress.setRange(0, 0)
        self.job_label.setText("Starting…")
        self.job = self.job_runner.start(
            fn,
            name=kind,
            on_yield=self._job_progress,
            on_failure=self._job_failed,
            on_finish=self._job_finished,
        )
        return True

    def start_scanning(self) -> None:
        """Find the folders' photos before there is a model: the sidebar counts them and
        the grid shows them; indexing follows once a model is there."""
        self._start_job("scan", lambda token: self.services.scan(cancel=token))

    def start_indexing(self) -> None:
        if self.status is None:  # not known yet whether there is a model: ask first
            self.refresh_status(then_index=True)
            return
        if self.job is not None and self.job_kind == "scan":  # a model came meanwhile
            self._reindex_after_job = True
            return
        if not self._model_ready:
            self.pages.setCurrentWidget(self.welcome)
            self.show_error("Download or import a model first.")
            return
        device, throttle = self.device, self.throttle
        self._start_job(
            "index",
            lambda token: self.services.index(device=device, cancel=token, throttle=throttle),
        )

    def _job_progress(self, progress: Progress) -> None:
        self.job_progressed.emit(progress)
        if progress.phase != "scan" and self._job_phase == "scan":
            current = self.history.current  # the scan found the photos: show them now
            if current is not None and not current.is_search:
                self.navigate(current, record=False)
        self._job_phase = progress.phase
        if progress.phase == "scan":
            self.job_progress.setRange(0, 0)
            self.job_label.setText(f"Looking for photos… {progress.done:,} files checked")
            return
        if progress.phase == "export":
            self.job_progress.setRange(0, 0 if progress.done == 0 else 1)
            if progress.done == 0:
                self.job_label.setText("Preparing fast searches (once per model)…")
            elif progress.warning is JobWarning.EXPORT_FAILED:
                log.warning("%s", progress.message)  # searches work as before; for the log
            return
        if progress.phase == "prepare":
            self.job_progress.setRange(0, 0)
            self.job_label.setText(
                "Finding the fastest way to run the model on this computer (once)…"
                if progress.done == 0
                else f"Encoder: {progress.message}"
            )
            return
        self.job_progress.setRange(0, max(progress.total, 1))
        self.job_progress.setValue(progress.done)
        if progress.phase == "index":
            self.job_label.setText("Saving the index…")
            return
        verb = "Tagging" if progress.phase == "tag" else "Indexing"
        parts = [f"{verb} {progress.done:,} of {progress.total:,}"]
        if progress.rate > 0:
            parts.append(f"{progress.rate:.1f} photos/s")
        if progress.eta_s is not None and progress.done < progress.total:
            left = progress.eta_s
            parts.append("almost done" if left < 5 else f"about {duration(left)} left")
        if progress.failed:
            parts.append(f"{progress.failed:,} could not be read")
        paused = self.job is not None and self.job.paused
        self.job_label.setText(("Paused · " if paused else "") + " · ".join(parts))
        if progress.phase == "embed" and progress.done and progress.done % 512 < 64:
            self.refresh_status()  # counts in the sidebar, now and then

    def _job_failed(self, message: str) -> None:
        self._job_stopped = True
        self.job_label.setText(message)

    def _job_finished(self) -> None:
        worker, kind = self.job, self.job_kind
        self.job = None
        self._show_job_controls(False)
        cancelled = worker is not None and worker.token.cancelled
        if cancelled and kind == "index" and self._job_phase == "export":
            self.job_label.setText(
                "Library up to date. Preparing fast searches was stopped; it runs again "
                "after the next indexing."
            )
        elif cancelled:
            self.job_label.setText(
                "Indexing stopped. What was done is kept; resume to go on."
                if kind == "index"
                else "Looking for photos stopped."
                if kind == "scan"
                else "Tagging stopped."
            )
            if kind == "index":
                self.resume_button.show()
        elif not self._job_stopped:
            self.job_label.setText(
                {"index": "Library up to date.", "scan": "Photos found."}.get(kind, "Tagging done.")
            )

        def refreshed() -> None:
            self.status_refreshed.disconnect(refreshed)
            current = self.history.current
            searched_early = kind == "index" and self._partial_search
            on_welcome = kind == "scan" and self.pages.currentWidget() is self.welcome
            if (
                current is not None
                and not on_welcome
                and (not current.is_search or kind == "tag" or searched_early)
            ):
                self.navigate(current, record=False)
            if kind == "scan" and self.status and not self._model_ready and not cancelled:
                found = self.status.photos
                self.job_label.setText(
                    f"{found:,} photo{'' if found == 1 else 's'} found · a model is needed "
                    "to search them"
                )
            failed = len(self.status.failed) if self.status else 0
            if kind == "index" and failed and not cancelled and not self._job_stopped:
                self.job_label.setText(
                    f"Library up to date · {failed:,} file{'' if failed == 1 else 's'} could "
                    "not be read (see the sidebar)"
                )
            self.job_finished.emit(kind)

        self.status_refreshed.connect(refreshed)
        self.refresh_status()
        if self._reindex_after_job and not cancelled:
            self._reindex_after_job = False
            QTimer.singleShot(0, self.start_indexing)

    def toggle_pause(self) -> None:
        if self.job is None:
            return
        if self.job.paused:
            self.job.resume()
            self.pause_button.setText("Pause")
            self.job_label.setText("Resuming…")
        else:
            self.job.pause()
            self.pause_button.setText("Resume")
            self.job_label.setText("Paused after the current batch.")

    def cancel_job(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.job_label.setText("Stopping after the current batch…")

    # -- tagging ---------------------------------------------------------------------------

    def edit_label_set(self, name: str) -> None:
        folders = [f.path for f in self.status.folders] if self.status else []
        dialog = LabelSetDialog(folders, name, self.label_sets.get(name), self)
        if dialog.exec() != LabelSetDialog.DialogCode.Accepted:
            return
        new_name = dialog.name_edit.text().strip()
        labels, folder, multi = dialog.labels, dialog.folder, dialog.multi_check.isChecked()
        self.save_and_tag(new_name, labels, folder, multi)

    def save_and_tag(self, name: str, labels: list[str], folder: str | None, multi: bool) -> None:
        def save(_: CancelToken) -> int:
            return self.services.create_label_set(name, labels)

        self.run(save, lambda _: self.start_tagging(name, folder, multi), "save label set")

    def start_tagging(self, name: str, folder: str | None, multi: bool) -> None:
        self._start_job(
            "tag",
            lambda token: self.services.tag(name, folder, multi=multi, cancel=token),
        )

    def delete_label_set(self, name: str) -> None:
        answer = QMessageBox.question(
            self, "Delete label set", f"Delete the label set “{name}” and the tags it gave?"
        )
        if answer == QMessageBox.StandardButton.Yes:
            self.run(
                lambda _: self.services.delete_label_set(name),
                lambda _: self.refresh_status(),
                "delete label set",
            )
