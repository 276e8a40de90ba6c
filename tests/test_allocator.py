"""The held mmap threshold: after a big block is freed, a batch-sized block is still mmapped.

Each case runs in a fresh interpreter (malloc's state is per process) and reads glibc's own count
of mmapped blocks (`mallinfo2().hblks`) around one allocation of 300 KiB made after a 4 MiB block
was freed: glibc then serves it from its heap, unless the threshold is held.
"""

from __future__ import annotations

import ctypes.util
import platform
import subprocess
import sys

import pytest

PROBE = """
import ctypes, ctypes.util, sys
from benchmark.allocator import hold_mmap_threshold
class Info(ctypes.Structure):
    names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(name, ctypes.c_size_t) for name in names.split()]
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype, libc.malloc.restype = Info, ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "held":
    assert hold_mmap_threshold()
libc.free(libc.malloc(4 << 20))  # the free that raises glibc's threshold, unless it is held
before = libc.mallinfo2().hblks
block = libc.malloc(300 << 10)
print(libc.mallinfo2().hblks - before)
"""


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or not ctypes.util.find_library("c"),
    reason="mallopt and mallinfo2 are glibc's",
)
@pytest.mark.parametrize(("case", "mmapped"), [("held", 1), ("default", 0)])
def test_a_batch_sized_block_is_mmapped_only_with_the_threshold_held(case: str, mmapped: int):
    out = subprocess.run([sys.executable, "-c", PROBE, case], capture_output=True, text=True, check=True)
    assert int(out.stdout) == mmapped
