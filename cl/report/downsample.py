"""Downsampling for display that keeps every dip: min and max of each bucket.

A plain stride would erase the one-evaluation drops the stability gap is made of; keeping the
minimum and the maximum of every bucket (in their order), plus the first and last points,
draws the same envelope with at most `points` points.
"""

from __future__ import annotations

import numpy as np


def minmax(x: np.ndarray, y: np.ndarray, points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) reduced to at most about `points` points; NaNs dropped, extremes kept."""
    keep = ~np.isnan(y)
    x, y = np.asarray(x)[keep], np.asarray(y)[keep]
    n = len(y)
    if n <= points:
        return x, y
    buckets = max(1, (points - 2) // 2)
    edges = np.linspace(0, n, buckets + 1).astype(int)
    starts = edges[:-1]
    lows = np.minimum.reduceat(y, starts)
    highs = np.maximum.reduceat(y, starts)
    chosen = [0, n - 1]
    for b, (lo, hi) in enumerate(zip(starts, edges[1:], strict=True)):
        seg = y[lo:hi]
        chosen += [lo + int(np.argmax(seg == lows[b])), lo + int(np.argmax(seg == highs[b]))]
    idx = np.unique(chosen)
    return x[idx], y[idx]
