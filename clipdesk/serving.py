"""Model serving: which model answers a library's searches and which one it is switching
to, the loaded models (each loaded once, freed when idle), the library's row for each
model, the vector indexes, and the models folder (one :class:`ModelStore`).

The services facade (:class:`clipdesk.services.Clipdesk`) composes one
:class:`ModelServer`; the verbs (index, search, tag) live there, not here.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from clipdesk.errors import ModelUnavailableError, NotIndexedError
from clipdesk.library import Library, db
from clipdesk.models import export_files, exported
from clipdesk.models.encoder import ClipEncoder, Encoder
from clipdesk.models.store import ModelStore, default_models_dir
from clipdesk.search.vector_index import VectorIndex
from clipdesk.spec import DEFAULT_MODEL, ModelSpec

MODEL_SETTING = "model_key"
TARGET_SETTING = "target_model_key"
DEVICE_SETTING = "device"
DEVICE_USED_SETTING = "device_used"


def _row_of(s: Session, key: str) -> db.Model | None:
    return s.scalar(select(db.Model).where(db.Model.key == key))


class ModelServer:
    """A library's models: the *serving* model answers searches; a *target* (named by
    ``use_model``) is embedded meanwhile and starts serving once every photo has a vector
    from it. Safe to share between threads: loading a model or an index holds a lock."""

    def __init__(self, library: Library, store: ModelStore | None = None) -> None:
        self.library = library
        self._store = store
        self._encoders: dict[str, Encoder] = {}
        self._query_encoders: dict[str, Encoder] = {}  # exports, for queries only
        self._last_used: dict[str, float] = {}
        self._indexes: dict[str, VectorIndex] = {}
        self._lock = threading.RLock()  # guards model and index loading
        # A process that answers one query (a CLI search): scan the int8 copy of the
        # vectors instead of loading the graph (clipdesk.search.compact).
        self.cold_scan = False

    @property
    def store(self) -> ModelStore:
        """The models folder (installed, downloads, imports), one for the whole app; made
        on first use, so that a process that never needs it never reads it."""
        with self._lock:
            if self._store is None:
                self._store = ModelStore()
            return self._store

    # -- the library's rows for its models -------------------------------------------------

    def model_row(self, key: str) -> db.Model | None:
        """The library's row for the model ``key``; None where it was never used here."""
        with self.library.session() as s:
            return _row_of(s, key)

    def model_id(self, key: str | None) -> int | None:
        row = None if key is None else self.model_row(key)
        return None if row is None else row.id

    def record_model(self, spec: ModelSpec, dim: int) -> db.Model:
        """The row for ``spec``, written the first time the library uses it."""
        with self.library.session() as s:
            row = _row_of(s, spec.key)
            if row is None:
                row = db.Model(
                    key=spec.key,
                    spec=spec.spec,
                    dim=dim,
                    config_json=spec.config_json,
                    created_at=time.time(),
                )
                s.add(row)
                s.commit()
            return row

    # -- which model ------------------------------------------------------------------------

    def serving_key(self) -> str | None:
        """The key of the model that answers searches now (None: nothing indexed yet)."""
        return self.library.get_setting(MODEL_SETTING)

    def _spec_from_setting(self, setting: str) -> ModelSpec | None:
        key = self.library.get_setting(setting)
        row = None if key is None else self.model_row(key)
        if row is None:
            return None
        arch, _, pretrained = row.spec.partition(":")
        return ModelSpec(arch, pretrained, row.config_json, known_key=row.key)

    def current_spec(self) -> ModelSpec | None:
        """The model that answers searches now."""
        return self._spec_from_setting(MODEL_SETTING)

    def target_spec(self) -> ModelSpec | None:
        """The model being switched to, until its vectors are complete."""
        return self._spec_from_setting(TARGET_SETTING)

    def default_spec(self) -> ModelSpec:
        """clipdesk's default model; without torch (the CPU bundle), the default model's
        export, else the first export there is. Never the bundle's self-test model: a
        model trained on clothing photos must not quietly index someone's holidays."""
        spec = ModelSpec.parse(DEFAULT_MODEL)
        if export_files.torch_available():
            return spec
        exports = [
            manifest
            for _folder, manifest in export_files.available_exports()
            if manifest.extra.get("role") != "self-test"
        ]
        for manifest in exports:
            if manifest.key == spec.key:
                return manifest.spec
        return exports[0].spec if exports else spec

    # -- loaded models ----------------------------------------------------------------------

    def _load(self, spec: ModelSpec, device: str) -> Encoder:
        folder = export_files.find_export(spec.key)
        weights = spec.weights_file
        if folder is not None and weights is not None and not weights.is_file():
            # Only the export came along (a bundle, a copied models folder): it is the model.
            return exported.ExportedEncoder(folder, choices_dir=default_models_dir())
        if not export_files.torch_available():
            if folder is None:
                names = ", ".join(m.label for _f, m in export_files.available_exports()) or "none"
                raise ModelUnavailableError(
                    f"{spec.spec} is not available in exported form, and this clipdesk (the "
                    f"CPU bundle) has no torch to run it (exported models here: {names}); "
                    "export it with `clipdesk models export` on the full install, then "
                    "`clipdesk models import --export FOLDER`"
                )
            return exported.ExportedEncoder(folder, choices_dir=default_models_dir())
        return ClipEncoder(
            spec,
            device,
            cache_dir=self.library.models_dir,
            choices_dir=default_models_dir(),
            store=self.store,
        )

    def encoder(self, spec: ModelSpec | None = None, device: str | None = None) -> Encoder:
        """A loaded model (each loaded once, under a lock); ``spec`` defaults to the
        serving model, then to clipdesk's default model."""
        with self._lock:
            spec = spec or self.current_spec() or self.default_spec()
            device = device or self.library.get_setting(DEVICE_SETTING, "auto") or "auto"
            loaded = self._encoders.get(spec.key)
            if loaded is None or (device != "auto" and loaded.device != device):
                loaded = self._load(spec, device)
                self._encoders[spec.key] = loaded
                used = self.library.get_setting(DEVICE_USED_SETTING) or ""
                # A load for a search knows the device, not yet the backend that indexing
                # chose on it ("cpu: bf16 via OpenVINO, 2.3x"): keep that line for status.
                if not used.startswith(f"{loaded.device}:"):
                    self.library.note_setting(DEVICE_USED_SETTING, loaded.device_reason)
            self._last_used[spec.key] = time.monotonic()
            return loaded

    def preload(self, encoder: Encoder) -> None:
        """Serve ``encoder`` for its model from now on, as if :meth:`encoder` had loaded
        it: one model shared by several libraries (tests, benchmarks) loads once."""
        with self._lock:
            self._encoders[encoder.spec.key] = encoder
            self._last_used[encoder.spec.key] = time.monotonic()

    def forget(self, key: str) -> None:
        """Drop the loaded model ``key``: the next use loads it afresh."""
        with self._lock:
            self._encoders.pop(key, None)

    def query_encoder(self) -> Encoder:
        """The serving model for one query (a text, an image): the loaded model if there is
        one, else its export when it has one (a cold ``clipdesk search`` then starts in a
        fraction of the time torch and open_clip take to import), else the model."""
        with self._lock:
            spec = self.current_spec() or self.default_spec()
            loaded = self._encoders.get(spec.key) or self._query_encoders.get(spec.key)
            if loaded is None and (folder := export_files.find_export(spec.key)) is not None:
                try:
                    loaded = exported.ExportedEncoder(folder)
                    self._query_encoders[spec.key] = loaded
                except export_files.ExportDamagedError:
                    if not export_files.torch_available():
                        raise  # it says what to do; there is nothing else to run
                    # The model itself answers (torch), or, without its weights, _load
                    # raises the same error; the next complete index exports it again.
            if loaded is None:
                return self.encoder(spec)
            self._last_used[spec.key] = time.monotonic()
            return loaded

    def unload_models(self, idle_for: float = 0.0) -> list[str]:
        """Free the models not used for ``idle_for`` seconds (an idle app calls this
        now and then); they load again on demand. Returns the keys unloaded."""
        with self._lock:
            now = time.monotonic()
            idle = [
                key
                for key in {**self._encoders, **self._query_encoders}
                if now - self._last_used.get(key, 0.0) >= idle_for
            ]
            for key in idle:
                self._encoders.pop(key, None)
                self._query_encoders.pop(key, None)
            return idle

    def loaded_models(self) -> list[str]:
        with self._lock:
            return list({**self._encoders, **self._query_encoders})

    # -- vector indexes ---------------------------------------------------------------------

    def index_for(self, key: str) -> VectorIndex:
        """The vector index of the model ``key`` (opened once)."""
        with self._lock:
            index = self._indexes.get(key)
            if index is None:
                row = self.model_row(key)
                if row is None:
                    raise NotIndexedError(
                        f"the library's model {key} is not recorded; "
                        "run `clipdesk index --model ...` again"
                    )
                index = VectorIndex(self.library, row.key, row.id, row.dim)
                index.cold_scan = self.cold_scan
                self._indexes[key] = index
            return index

    def vector_index(self) -> VectorIndex:
        """The serving model's index. Needs no model loaded: a similar-photo search runs on
        stored vectors alone."""
        key = self.serving_key()
        if key is None:
            raise NotIndexedError("nothing is indexed yet: add a folder, then run `clipdesk index`")
        return self.index_for(key)

    def close_indexes(self) -> None:
        """Forget the opened indexes: the next use reads them from disk again."""
        with self._lock:
            self._indexes.clear()
