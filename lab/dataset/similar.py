"""Exact and near duplicates: SHA-256 equality and perceptual-hash distance."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["hamming", "near_duplicate_pairs"]


def hamming(a: str, b: str) -> int:
    """Bits that differ between two hex perceptual hashes."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def near_duplicate_pairs(hashes: Sequence[str], max_distance: int) -> list[tuple[int, int, int]]:
    """``(i, j, distance)`` for every pair ``i < j`` within ``max_distance`` bits.

    All pairs are compared (n²/2, vectorised per row): a dataset holds thousands of
    images at most, so this stays well under a second.
    """
    if len(hashes) < 2:
        return []
    values = np.array([int(h, 16) for h in hashes], dtype=np.uint64)
    pairs: list[tuple[int, int, int]] = []
    for i in range(len(values) - 1):
        distances = np.bitwise_count(values[i + 1 :] ^ values[i])
        for offset in np.flatnonzero(distances <= max_distance):
            j = i + 1 + int(offset)
            pairs.append((i, j, int(distances[offset])))
    return pairs
