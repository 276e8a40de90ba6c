"""Host memory that does not creep: big blocks go back to the system when freed (glibc only).

glibc's malloc serves blocks above a threshold (128 KiB at first) with their own mmap and unmaps
them when freed. But the first time such a block is freed it raises the threshold to that size
(up to 32 MiB), so later batches of hidden states, waveforms and activations come from its heap.
Their shapes change with every batch, the heap fragments, and a run's resident memory grows
with the number of batches rather than their size (1.32x the peak for 4x the corpus, measured by
`measurements/scale.py`). `hold_mmap_threshold` fixes it at 256 KiB (`mallopt(M_MMAP_THRESHOLD)`,
as the variable `MALLOC_MMAP_THRESHOLD_` would), which keeps the peak flat (docs/distributed.md);
the CLI calls it first; without glibc it does nothing. The price is page faults on each new
block: about a quarter more CPU time in a tiny CPU training step (`measurements/allocator_cost.py`).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h
THRESHOLD = 256 * 1024  # bytes: a batch's tensors are bigger; small objects stay on the heap


def hold_mmap_threshold() -> bool:
    """Hold glibc's mmap threshold at `THRESHOLD`; False where there is no glibc `mallopt`."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD))
