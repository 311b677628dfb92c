"""The benchmarks' memory probe reads known allocations right, and the coordinate-wise
rules stay within twice the update matrix (the bound ``benchmarks/aggregators.py`` reports).
"""

import numpy as np
import pytest
import torch

from benchmarks.memprobe import peak_extra_bytes, probe_available
from strategies.bulyan import bulyan
from strategies.median import coordinate_median
from strategies.trimmed_mean import trimmed_mean

pytestmark = pytest.mark.skipif(not probe_available(), reason="needs Linux /proc/self/clear_refs")

MIB = 2**20


def test_probe_reads_a_buffer_of_twice_the_matrix_as_twice():
    matrix = np.ones((64, MIB // 8), dtype=np.float32)  # 32 MiB

    def twice() -> float:
        buffer = np.ones((2 * matrix.shape[0], matrix.shape[1]), dtype=np.float32)
        return float(buffer[-1, -1])

    ratio = peak_extra_bytes(twice) / matrix.nbytes
    assert 1.9 <= ratio <= 2.15


def test_probe_counts_a_buffer_freed_before_return():
    def allocate_and_free() -> None:
        # 64 MiB: above glibc's largest mmap threshold (32 MiB), so the buffer is always
        # fresh pages; a smaller one can reuse heap pages a long-lived test process
        # (an xdist worker) already holds, which no RSS probe can see.
        buffer = np.ones(16 * MIB, dtype=np.float32)
        del buffer

    assert peak_extra_bytes(allocate_and_free) >= 60 * MIB


def test_probe_ignores_memory_held_before_the_call():
    matrix = np.ones((64, MIB // 8), dtype=np.float32)
    assert peak_extra_bytes(lambda: float(matrix.sum())) < 0.1 * matrix.nbytes


@pytest.mark.parametrize(
    "rule",
    [
        lambda u: coordinate_median(u),
        lambda u: trimmed_mean(u, beta=0.1),
        lambda u: bulyan(u, f=2),
    ],
    ids=["median", "trimmed_mean", "bulyan"],
)
def test_coordinate_wise_rules_peak_at_most_twice_the_matrix(rule):
    updates = torch.rand((20, 250_000))  # 19 MiB, 8 column chunks
    rule(updates[:, :4096])  # lazy set-up (thread pools) outside the reading
    extra = peak_extra_bytes(lambda: rule(updates))
    assert (updates.nbytes + extra) / updates.nbytes <= 2.0
