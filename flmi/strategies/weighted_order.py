"""Example-weighted order statistics per coordinate: weighted median and trimmed mean.

The robust rules of :mod:`flmi.strategies.robust` weight each site's vote by
its example count when ``weighting = "examples"``. This module holds the
numerics, numpy only:

* :func:`vote_weights` turns the reported example counts into per-site vote
  weights, capping any one site's share of the total (a site can report any
  count it likes, so an uncapped weighted median would belong to whoever
  claims the most examples);
* :func:`weighted_median` and :func:`weighted_trimmed_mean` combine one
  tensor of every site, coordinate by coordinate, vectorised over blocks of
  :data:`BLOCK` coordinates so that memory stays at ``n * BLOCK`` values
  whatever the model's size.

Ties in value are ordered by site (the order of the rows, which the
strategies sort by site name), so every result is a deterministic function of
the set of updates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: Coordinates combined at once: ``n`` sites times this many float64 values in memory.
BLOCK = 1 << 18

_EXACT = 2.0**53


def canonical_weights(weights: Sequence[float]) -> np.ndarray:
    """Positive weights rescaled so that only their ratios matter, exactly.

    Integer counts (every site's ``num_examples``) are divided by their
    greatest common divisor: the results are small integers, identical after
    every count is multiplied by the same factor, and their cumulative sums are
    exact in float64. Other positive weights are divided by the largest.

    Raises
    ------
    ValueError
        A weight that is not finite and positive.
    """
    values = [float(w) for w in weights]
    if not values or not all(math.isfinite(w) and w > 0 for w in values):
        raise ValueError(f"vote weights must be finite and positive, got {values}")
    if all(w.is_integer() for w in values) and sum(values) < _EXACT:
        ints = [int(w) for w in values]
        g = math.gcd(*ints)
        return np.array([i // g for i in ints], dtype=np.float64)
    return np.asarray(values, dtype=np.float64) / max(values)


def vote_weights(weights: Sequence[float], *, max_share: float) -> np.ndarray:
    """Per-site vote weights: the canonical weights with no share above ``max_share``.

    Sites whose share of the total exceeds the cap are lowered to one common
    value ``t`` chosen so that each of them holds exactly ``max_share`` of the
    new total ("water-filling"): with ``k`` sites capped and ``R`` the sum of
    the others, ``t = c R / (1 - c k)``. The others keep their weight, so their
    ratios are untouched. A cap at or below ``1 / n`` leaves every site the
    same weight (1.0): the unweighted rule. ``max_share >= 1`` caps nothing.

    Parameters
    ----------
    weights
        Each site's reported example count (or any positive weight), in row order.
    max_share
        ``c`` in ``(0, 1]``: the largest share of the total vote one site may hold.

    Returns
    -------
    numpy.ndarray
        float64 weights, one per site, in the same order.
    """
    if not 0.0 < max_share <= 1.0:
        raise ValueError(f"max_share must be in (0, 1], got {max_share}")
    w = canonical_weights(weights)
    n = len(w)
    if max_share * n <= 1.0:
        return np.ones(n, dtype=np.float64)
    c = max_share
    if float(np.max(w)) <= c * float(np.sum(w)):
        return w
    ordered = np.sort(w)[::-1]
    # rest[k] = sum of the n - k smallest weights, summed smallest first.
    rest = np.concatenate([np.cumsum(ordered[::-1])[::-1], [0.0]])
    for k in range(1, n):
        if 1.0 - c * k <= 0.0:
            break
        t = c * float(rest[k]) / (1.0 - c * k)
        if ordered[k] <= t:
            capped: np.ndarray = np.minimum(w, t)
            return capped
    return np.ones(n, dtype=np.float64)


def _blocks(rows: Sequence[np.ndarray]) -> tuple[int, list[slice]]:
    size = int(rows[0].size)
    return size, [slice(s, min(s + BLOCK, size)) for s in range(0, size, BLOCK)]


def _sorted_block(
    rows: Sequence[np.ndarray], weights: np.ndarray, where: slice
) -> tuple[np.ndarray, np.ndarray]:
    """Values of ``where`` sorted per coordinate (ties by row), and their weights alongside."""
    block = np.stack([np.asarray(r, dtype=np.float64).reshape(-1)[where] for r in rows])
    order = np.argsort(block, axis=0, kind="stable")
    return np.take_along_axis(block, order, axis=0), weights[order]


def weighted_median(rows: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """The weighted median of every coordinate over the rows.

    Per coordinate, with the values sorted ``v_1 <= ... <= v_n`` (ties in row
    order), their weights ``w_j`` and cumulative sums ``C_j`` of total ``W``:
    the result is ``v_j`` for the first ``j`` with ``C_j > W / 2``, except
    when some ``C_j`` equals ``W / 2`` exactly (the weight splits evenly), where
    it is ``(v_j + v_{j+1}) / 2``. With equal weights this is the ordinary
    median (the mean of the middle two when ``n`` is even); a row holding more
    than half of the weight is the result.

    Parameters
    ----------
    rows
        One array per site, all of the same shape.
    weights
        float64 weight per row, positive (see :func:`vote_weights`).

    Returns
    -------
    numpy.ndarray
        float64, flattened (``rows[0].size`` values).
    """
    size, blocks = _blocks(rows)
    out = np.empty(size, dtype=np.float64)
    for where in blocks:
        values, w = _sorted_block(rows, weights, where)
        cumulative = np.cumsum(w, axis=0)
        total = cumulative[-1]
        cols = np.arange(values.shape[1])
        j = np.argmax(2.0 * cumulative >= total, axis=0)
        # An even split needs a next value, which always exists: weights are positive.
        even = 2.0 * cumulative[j, cols] == total
        upper = values[np.minimum(j + 1, len(rows) - 1), cols]
        at = values[j, cols]
        out[where] = np.where(even, (at + upper) / 2.0, at)
    return out


def weighted_trimmed_mean(rows: Sequence[np.ndarray], weights: np.ndarray, k: int) -> np.ndarray:
    """Per coordinate, drop the ``k`` smallest and ``k`` largest values, weighted mean of the rest.

    Trimming counts *sites*, not weight: a site with a large (or falsely
    reported) example count is dropped whole when its value is extreme.
    Of tied values at a trim boundary, the later row is the one dropped at
    the top and the earlier one at the bottom (rows are in site-name order).

    Parameters
    ----------
    rows
        One array per site, all of the same shape.
    weights
        float64 weight per row, positive (see :func:`vote_weights`).
    k
        Values dropped at each end; ``0 <= 2 k < n``.

    Returns
    -------
    numpy.ndarray
        float64, flattened: ``sum w_j v_j / sum w_j`` over the kept values.
    """
    n = len(rows)
    if not 0 <= 2 * k < n:
        raise ValueError(f"cannot trim {k} of {n} values at each end")
    size, blocks = _blocks(rows)
    out = np.empty(size, dtype=np.float64)
    for where in blocks:
        values, w = _sorted_block(rows, weights, where)
        kept_v, kept_w = values[k : n - k], w[k : n - k]
        out[where] = np.sum(kept_v * kept_w, axis=0) / np.sum(kept_w, axis=0)
    return out
