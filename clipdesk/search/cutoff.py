"""A per-query relevance cutoff: where the relevant photos of a search end.

Scores differ a lot from query to query and from model to model, so no fixed score (and no
fixed top-k) says where a query's relevant photos end. The cutoff decides per query, from
two pieces of evidence the search service has cheaply:

1. **The query's own score distribution** (tail statistics with a multiple-testing bar).
   The bulk of the library does not match the query; its scores are modelled as a Gaussian
   fitted to the library's 15th and 40th percentiles only (a Gaussian's are mu - 1.036 sigma
   and mu - 0.253 sigma). Relevant photos sit in the upper tail, so up to 60 % of the library
   may be relevant without moving the fit: a library that is mostly of one subject still
   finds it (a fit to the median, tried first, found nothing when the subject was over half
   the library). Every photo gets a one-sided p-value against that bulk and the
   Benjamini-Hochberg procedure (1995) at false-discovery rate ``fdr`` runs over the *whole
   library* (``library_size`` tests, photos outside the top-M counted as not rejected,
   which is exact since their p-values are larger). The bar therefore grows with the
   library's size: among 100,000 photos a score must stand out further than among 100,
   as it should, since a large library's bulk reaches further by chance alone. If BH rejects
   nothing, the query has no tail that its bulk does not explain: **no photo matches**.
2. **A null distribution from generic prompts** ("a photo.", "an image." ...: prompts that
   name nothing, encoded once per model). Their scores over the library show how high a
   photo scores against a caption that says nothing about it. A hit is relevant only if its
   query score beats the highest score *any* photo of the library reaches against the
   generic prompt: the extreme of the null over the same ``library_size`` photos, so this
   bar also grows with the library, and a "hub" photo that scores high for every caption
   raises it (the hubness correction of query-bank normalisation, with the generic prompt as
   the bank). Queries the model cannot read (out of its domain) score like the generic
   prompt, so few or none of their hits clear this bar.

The decision: if (1) finds no tail, the answer is 0. Otherwise, with null scores given, the
count is the number of top hits above the null bar (2), which sets the extent (it may be
more or fewer than BH's rejections); without null scores, BH's rejections are the count.
The hits kept are always a prefix of the ranking (the best ``count`` hits).

Nothing here is tuned to a data set: the location, scale and bars come from the query's
own scores, the library size and the null scores; the only setting is the FDR level of BH
(``DEFAULT_FDR`` = 0.5), chosen among 0.05, 0.2 and 0.5 on the validation split of a
held-out set (bench/bench_cutoff.py --choose), once for the method, never per model or data
set. It is lenient because BH here is only the gate ("is there a tail at all?"); the null
bar sets the extent and keeps the precision. Tested alternatives
that did worse there: the per-photo margin over the null score (query score minus the
photo's own generic-prompt score), a residual after regressing the query's scores on the
null scores, median/MAD scales, a Bonferroni bar instead of BH, a Gaussian fit to the null
scores instead of their maximum, and a two-component mixture split for the extent.

Pure numpy (no model, no database); the search service supplies the scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_FDR = 0.5  # Benjamini-Hochberg false-discovery rate of the gate (module docstring)
_MIN_BULK = 3  # scores needed to fit a location and a scale at all

__all__ = ["DEFAULT_FDR", "Cutoff", "decide", "relevant_count"]


@dataclass(frozen=True)
class Cutoff:
    """The cutoff of one query: keep the best ``count`` hits.

    ``threshold`` is the lowest score kept (None when nothing is kept), ``reason`` a short
    English phrase for logs and tooltips.
    """

    count: int
    threshold: float | None
    reason: str


def _as_scores(values: object, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite numbers")
    return array


# The bulk is fitted to the lowest 40 % of the scores only: at its 15th and 40th percentiles
# a Gaussian's quantiles are mu - 1.0364 sigma and mu - 0.2533 sigma.
_LOW, _HIGH = 0.15, 0.40
_Z_LOW, _Z_HIGH = -1.0364334, -0.2533471


def _bulk(sample: np.ndarray) -> tuple[float, float]:
    """Location and scale of the bulk, from its 15th and 40th percentiles: up to 60 % of
    the library may match the query without moving the fit."""
    low, high = np.quantile(sample, [_LOW, _HIGH])
    scale = float(high - low) / (_Z_HIGH - _Z_LOW)
    return float(high) - _Z_HIGH * scale, scale


def _upper_p(z: np.ndarray) -> np.ndarray:
    """One-sided Gaussian p-values, P(Z >= z)."""
    erfc = np.vectorize(math.erfc, otypes=[np.float64])
    return np.asarray(0.5 * erfc(z / math.sqrt(2.0)), dtype=np.float64)


def _bh_count(top: np.ndarray, location: float, scale: float, tests: int, fdr: float) -> int:
    """Benjamini-Hochberg rejections among ``tests`` photos, of which ``top`` (descending)
    are the best; the others have larger p-values and are never rejected before them."""
    p = _upper_p((top - location) / scale)
    ranks = np.arange(1, len(top) + 1)
    passing = np.flatnonzero(p <= fdr * ranks / tests)
    return 0 if len(passing) == 0 else int(passing[-1]) + 1


def decide(
    top_scores: object,
    library_scores: object,
    *,
    library_size: int | None = None,
    null_scores: object | None = None,
    fdr: float = DEFAULT_FDR,
) -> Cutoff:
    """Where the relevant hits of one query end.

    ``top_scores``: the query's best scores, best first (the top-M hits, M up to a few
    hundred). ``library_scores``: the query's scores over the whole library or a uniform
    random sample of it (a few hundred is plenty); it may overlap ``top_scores``.
    ``library_size``: photos searched (default: the larger of the two lengths).
    ``null_scores``: the same library's photos (all, or a sample that includes the highest)
    scored against the model's generic-prompt vector; only their maximum is used.
    """
    top = _as_scores(top_scores, "top_scores")
    sample = _as_scores(library_scores, "library_scores")
    if not 0.0 < fdr < 1.0:
        raise ValueError("fdr must be between 0 and 1")
    if len(top) > 1 and np.any(np.diff(top) > 0):
        raise ValueError("top_scores must be sorted best first")
    if len(top) == 0:
        return Cutoff(0, None, "no hits")
    tests = max(len(top), len(sample), library_size or 0)
    null_bar = None
    if null_scores is not None:
        null = _as_scores(null_scores, "null_scores")
        null_bar = float(null.max()) if len(null) else None

    if len(sample) < _MIN_BULK or _bulk(sample)[1] <= 0.0:
        if null_bar is None:
            return Cutoff(len(top), float(top[-1]), "too few scores to judge; no cutoff")
        count = int(np.sum(top > null_bar))
        return _result(top, count, "above the generic-prompt bar (too few scores for a tail)")

    location, scale = _bulk(sample)
    tail = _bh_count(top, location, scale, tests, fdr)
    if tail == 0:
        return Cutoff(0, None, "no score stands out from the library's bulk")
    if null_bar is None:
        return _result(top, tail, "stands out from the library's bulk")
    count = int(np.sum(top > null_bar))
    if count == 0:
        return Cutoff(0, None, "no hit beats the generic prompt's best score")
    return _result(top, count, "beats the generic prompt's best score")


def _result(top: np.ndarray, count: int, reason: str) -> Cutoff:
    if count == 0:
        return Cutoff(0, None, reason)
    return Cutoff(count, float(top[count - 1]), reason)


def relevant_count(
    top_scores: object,
    library_scores: object,
    *,
    library_size: int | None = None,
    null_scores: object | None = None,
    fdr: float = DEFAULT_FDR,
) -> int:
    """How many of the best hits are relevant (0: no photo matches). See ``decide``."""
    return decide(
        top_scores,
        library_scores,
        library_size=library_size,
        null_scores=null_scores,
        fdr=fdr,
    ).count
