"""Per-track samples, the best shot, the fused track template and when to search.

A sample's score is the quality stage's overall score (inter-eye distance, sharpness,
brightness, contrast, yaw and roll in one geometric mean), and a face whose box touches the
frame edge is no sample at all (a clipped face aligns badly). The best shot changes only for a
clearly better sample: Frigate's rule "score + 0.05" (its alternative, area × 1.1, is already
inside the score through the inter-eye distance), so a track's crop does not flicker between
near-equal frames. The track template is the normalised mean of the best `fuse_k` samples'
templates: averaging unit vectors of one person cancels per-frame noise.

Searches, never one per frame: "early" at the first sample over `search_quality`, "better" when
the fused template's mean quality rose by `better_margin` since the last search (at most
`searches_per_track` in all), "final" when the track ends without having been searched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from yingyan.embedding.template import normalise
from yingyan.types import Box, Face, RGBImage, Template

Reason = Literal["early", "better", "final"]
CLEARLY_BETTER = 0.05  # Frigate's best-shot margin on the sample score


@dataclass(frozen=True, slots=True)
class Sample:
    pts: float
    score: float
    template: Template


def clipped(box: Box, width: int, height: int, edge_px: float = 2.0) -> bool:
    """True when the face box reaches within `edge_px` of (or beyond) the frame edge."""
    return (
        box.x1 < edge_px
        or box.y1 < edge_px
        or box.x2 > width - edge_px
        or box.y2 > height - edge_px
    )


def sample_score(face: Face, width: int, height: int) -> float | None:
    """The quality score of a face as a track sample, None when clipped by the frame edge."""
    if clipped(face.detection.box, width, height):
        return None
    return float(face.quality.score)


def crop(image: RGBImage, box: Box, margin: float) -> RGBImage:
    """The face box grown by `margin` of its size on every side, cut from the (clean) frame and
    copied, so the track holds a small crop rather than the frame."""
    h, w = image.shape[:2]
    mx, my = box.width * margin, box.height * margin
    x1, y1 = max(0, int(box.x1 - mx)), max(0, int(box.y1 - my))
    x2, y2 = min(w, int(np.ceil(box.x2 + mx))), min(h, int(np.ceil(box.y2 + my)))
    return np.array(image[y1:y2, x1:x2], dtype=np.uint8, copy=True)


def fuse(templates: list[Template]) -> Template:
    """The normalised mean of templates of one model."""
    first = templates[0]
    for t in templates[1:]:
        first.check_comparable(t)
    vector = normalise(np.mean([t.vector for t in templates], axis=0))
    return Template(vector, first.model, f"fused{len(templates)}:{first.recipe}")


@dataclass(slots=True)
class TrackState:
    """What one track has gathered; discarded when the track closes (nothing is stored)."""

    track_id: int
    first_pts: float
    last_pts: float
    fuse_k: int = 3
    samples: list[Sample] = field(default_factory=list)  # best first, at most fuse_k
    embedded: int = 0  # samples embedded so far (bounded per track)
    best_score: float = -1.0
    best_crop: RGBImage | None = None
    searches: int = 0
    searched_quality: float = -1.0  # fused quality at the last search
    match: object | None = None  # the last search's match, the track's decision

    def wants(self, score: float) -> bool:
        """Worth embedding: it would enter the best `fuse_k` or become the best shot."""
        if len(self.samples) < self.fuse_k:
            return True
        return score > self.samples[-1].score + CLEARLY_BETTER / 2

    def add(self, face: Face, score: float, pts: float, image: RGBImage, margin: float) -> None:
        if face.template is None:
            return
        self.embedded += 1
        self.samples.append(Sample(pts, score, face.template))
        self.samples.sort(key=lambda s: -s.score)
        del self.samples[self.fuse_k :]
        if self.best_crop is None or score >= self.best_score + CLEARLY_BETTER:
            self.best_score = score
            self.best_crop = crop(image, face.detection.box, margin)

    @property
    def fused_quality(self) -> float:
        """Mean score of the samples in the fused template."""
        return float(np.mean([s.score for s in self.samples])) if self.samples else -1.0

    def template(self) -> Template:
        return fuse([s.template for s in self.samples])

    def trigger(
        self, *, search_quality: float, better_margin: float, max_searches: int
    ) -> Reason | None:
        """Which search is due now, if any ("early" or "better")."""
        if not self.samples or self.searches >= max_searches:
            return None
        if self.searches == 0:
            return "early" if self.best_score >= search_quality else None
        if self.fused_quality >= self.searched_quality + better_margin:
            return "better"
        return None

    def final_due(self, min_quality: float) -> bool:
        return self.searches == 0 and bool(self.samples) and self.best_score >= min_quality
