"""A session's watchlist search for one track: the template fused from a track's best samples
against every watchlist of the session, at the session's threshold.

Only candidates at or above the threshold come back; a track that matches nothing leaves
nothing (no row, no audit entry: the session's start entry authorises its searches, and
counts of searches are metrics). Thresholds are re-read when a watchlist changes size, since
FPIR grows with the number of subjects compared."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from yingyan.gallery.service import GalleryService
from yingyan.store.tables import TemplateRow
from yingyan.types import Template
from yingyan.watch.alerts import AlertCandidate
from yingyan.watch.sessions import WatchSession, get_session, session_threshold
from yingyan.watch.threshold import WatchThreshold


@dataclass(frozen=True, slots=True)
class WatchMatch:
    candidates: tuple[AlertCandidate, ...]  # best first, all >= threshold.score
    threshold: WatchThreshold


class WatchMatcher:
    """Searches one session's watchlists; one per camera worker (it holds no frames)."""

    def __init__(self, service: GalleryService, session: str, *, k: int = 5) -> None:
        self.service = service
        self.k = k
        self.session: WatchSession = get_session(service.db, session)
        self.threshold = session_threshold(service.db, self.session.id)
        self._gallery_ids = {g.name: g.id for g in service.galleries()}

    @property
    def model(self) -> str | None:
        """The model of the session's watchlists (all of one model; None: no watchlist)."""
        names = self.session.galleries
        return self.service.gallery_model(names[0]) if names else None

    def refresh(self) -> None:
        """Re-read the session and its threshold (a watchlist grew, the session changed)."""
        self.session = get_session(self.service.db, self.session.name)
        self.threshold = session_threshold(self.service.db, self.session.id)
        self._gallery_ids = {g.name: g.id for g in self.service.galleries()}

    def search(self, template: Template) -> WatchMatch | None:
        found: list[tuple[str, int, str, float]] = []
        for name in self.session.galleries:
            hits = self.service.identify(
                name, [template], k=self.k, mode="threshold", threshold=self.threshold.score
            )[0]
            found += [(name, c.template_id, c.external_id, c.score) for c in hits]
        if not found:
            return None
        subjects = self._subjects([t for _, t, _, _ in found])
        ranked = sorted(found, key=lambda f: -f[3])
        candidates = tuple(
            AlertCandidate(self._gallery_ids[name], subjects[tid], external_id, score)
            for name, tid, external_id, score in ranked[: self.k]
        )
        return WatchMatch(candidates, self.threshold)

    def _subjects(self, template_ids: list[int]) -> dict[int, int]:
        with self.service.db.read() as s:
            rows = s.execute(
                select(TemplateRow.id, TemplateRow.subject_id).where(
                    TemplateRow.id.in_(template_ids)
                )
            )
            return {tid: sid for tid, sid in rows}
