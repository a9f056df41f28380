"""How many photos the library holds, per folder, and how many have a vector: what
``status`` and the window's sidebar show."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import case, func, select

from clipdesk.library import Library, db


@dataclass(frozen=True)
class PhotoCounts:
    per_folder: dict[int, tuple[int, int]]  # folder (root) id: (photos, with a vector)
    failed: list[tuple[str, str]]  # photos that could not be read: (path, why), by path
    of_target: int  # readable photos with a vector of the model being switched to

    @property
    def photos(self) -> int:
        return sum(total for total, _ in self.per_folder.values())

    @property
    def indexed(self) -> int:
        return sum(done for _, done in self.per_folder.values())


def count_photos(library: Library, model_id: int | None, target_id: int | None) -> PhotoCounts:
    """The photos, and those readable with a vector under ``model_id`` (the serving model)
    and ``target_id`` (a model being switched to; None: none)."""
    with library.session() as s:
        embedded = select(db.Embedding.fingerprint).where(db.Embedding.model_id == model_id)
        is_indexed = db.Photo.fingerprint.in_(embedded) & db.Photo.error.is_(None)
        # One pass over the photos for every folder's counts (a million rows: one scan).
        per_folder = {
            root_id: (int(total), int(done or 0))
            for root_id, total, done in s.execute(
                select(
                    db.Photo.root_id,
                    func.count(),
                    func.sum(case((is_indexed, 1), else_=0)),
                ).group_by(db.Photo.root_id)
            )
        }
        failed = s.execute(
            select(db.Photo.path, db.Photo.error)
            .where(db.Photo.error.is_not(None))
            .order_by(db.Photo.path)
        ).all()
        of_target = 0
        if target_id is not None:
            by_target = select(db.Embedding.fingerprint).where(db.Embedding.model_id == target_id)
            of_target = (
                s.scalar(
                    select(func.count()).where(
                        db.Photo.fingerprint.in_(by_target), db.Photo.error.is_(None)
                    )
                )
                or 0
            )
    return PhotoCounts(per_folder, [(p, e or "") for p, e in failed], of_target)
