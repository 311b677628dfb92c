r"""Peak resident memory a call adds, from Linux's per-process high-water mark.

``getrusage``'s ``ru_maxrss`` is the peak over the whole life of the
process (imports, building the inputs), so it cannot isolate one call. Here
the kernel's high-water mark ``VmHWM`` is reset to the current RSS just
before the call (writing ``5`` to ``/proc/self/clear_refs``, Linux >= 4.0)
and read back after it:

.. math:: \text{extra} = \text{VmHWM}_\text{after} - \text{VmRSS}_\text{before}

which is the most resident memory the call held above what the process
already held, whatever it freed before returning. Memory the call reuses
from pages the process already had resident (freed heap) is not counted,
since it costs nothing new.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")


def status_bytes(field: str) -> int:
    """One ``kB`` field of ``/proc/self/status`` (e.g. ``VmRSS``, ``VmHWM``) in bytes."""
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(f"{field} not in {STATUS}")


def probe_available() -> bool:
    """Whether this process can reset its high-water mark (Linux with ``/proc``)."""
    return CLEAR_REFS.exists() and STATUS.exists()


def peak_extra_bytes(call: Callable[[], object]) -> int:
    """Most resident memory ``call()`` held above the process's RSS just before it.

    Parameters
    ----------
    call : Callable[[], object]
        The work to measure; its return value is dropped after the reading.

    Returns
    -------
    int
        ``VmHWM`` after the call minus ``VmRSS`` before it, in bytes (at least 0).

    Raises
    ------
    OSError
        If ``/proc/self/clear_refs`` cannot be written (not Linux).
    """
    gc.collect()
    CLEAR_REFS.write_text("5")
    before = status_bytes("VmRSS")
    result = call()
    peak = status_bytes("VmHWM")
    del result
    return max(peak - before, 0)
