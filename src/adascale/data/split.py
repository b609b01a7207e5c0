"""Contiguous train/validation/test splits.

Frames of a trajectory are time-correlated, so random splits leak near-copies of test frames
into training; contiguous blocks in file order are the honest split (with several replicas
the blocks follow replica order).
"""

from __future__ import annotations

from collections.abc import Sequence

from adascale.data.frames import Frame
from adascale.errors import AdaScaleError


def split_frames(frames: Sequence[Frame], sizes: Sequence[int]) -> list[list[Frame]]:
    """Consecutive blocks of the given sizes, in order; frames beyond their sum are left out."""
    if any(size < 0 for size in sizes):
        raise AdaScaleError(f"split sizes must not be negative, got {list(sizes)}")
    if sum(sizes) > len(frames):
        raise AdaScaleError(f"split sizes {list(sizes)} add up to {sum(sizes)} frames but there are only {len(frames)}")
    blocks, start = [], 0
    for size in sizes:
        blocks.append(list(frames[start : start + size]))
        start += size
    return blocks


def evenly_spaced(items: Sequence, count: int) -> list:
    """``count`` items spread evenly over the sequence (all when it is shorter)."""
    if count >= len(items):
        return list(items)
    stride = len(items) / count
    return [items[int(i * stride)] for i in range(count)]
