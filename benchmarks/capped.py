"""Time a reference (Flower) call under a wall-clock cap, and record it honestly.

Flower's legacy Krum and Bulyan take hours at n = 1000, d = 1e6 (Krum is
n^2 d, Bulyan n^3 d). With a cap, each reference call runs in a forked child
(the update matrix is shared copy-on-write, not copied) that times the call
itself and sends back the time and the output; the parent starts its own clock
when the child reports that the call is about to start and kills the child
(``SIGKILL``) once ``cap`` seconds have passed. A stopped call therefore ran
for at least the ``stopped_after_s`` the parent read, and

    t_Flower / t_ours > stopped_after_s / t_ours

is a proven lower bound on the speed-up, not a prediction. A row of the grid
keeps, per side (``legacy`` or ``msg``):

* measured: ``{side}_s``, ``{side}_speedup`` (and ``{side}_capped: false``
  and ``{side}_cap_s`` when a cap was in force);
* stopped at the cap: ``{side}_capped: true``, ``{side}_cap_s``,
  ``{side}_stopped_after_s``, ``{side}_speedup_lower_bound``, and no
  ``{side}_s`` (so no fit or goal can read it as a time);
* failed (the child died or raised): ``{side}_failed``.

Linux only (``fork``), like the memory probe.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection

import numpy as np


class ReferenceCallError(RuntimeError):
    """The reference call raised, or its child process died (e.g. killed for memory)."""


@dataclass(frozen=True)
class Timing:
    """One timed reference call.

    Attributes
    ----------
    seconds : float
        The call's wall time when it finished; when ``capped``, the wall time it
        had run when it was stopped (at least the cap).
    output : object
        What the call returned (``None`` when capped).
    capped : bool
        Whether the call was stopped at the cap.
    """

    seconds: float
    output: object
    capped: bool


def _child(conn: Connection, call: Callable[[], object]) -> None:
    """Run ``call`` in the forked child: report the start, then the time and the output."""
    try:
        conn.send(("started", None))
        start = time.perf_counter()
        output = call()
        conn.send(("done", (time.perf_counter() - start, output)))
    except Exception as exc:  # reported to the parent, which raises ReferenceCallError
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _receive(conn: Connection, process: multiprocessing.process.BaseProcess) -> tuple[str, object]:
    try:
        return conn.recv()
    except EOFError:
        process.join()
        raise ReferenceCallError(f"reference process died (exit code {process.exitcode})") from None


def run_capped(call: Callable[[], object], cap: float | None) -> Timing:
    """Time one ``call()``: in this process without a cap, else in a child stopped at ``cap``.

    Parameters
    ----------
    call : Callable[[], object]
        The reference call (it sees this process's memory through ``fork``).
    cap : float or None
        Seconds the call may run; ``None``: no cap, run here.

    Returns
    -------
    Timing
        The call's time and output, or ``capped`` with the time it had run.

    Raises
    ------
    ReferenceCallError
        If the call raised or its process died.
    """
    if cap is None:
        start = time.perf_counter()
        output = call()
        return Timing(time.perf_counter() - start, output, False)
    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(child, call), daemon=True)
    process.start()
    child.close()  # so the parent reads EOF if the child dies
    try:
        _receive(parent, process)  # "started": the call begins now
        start = time.perf_counter()
        if not parent.poll(cap):
            stopped_after = time.perf_counter() - start
            process.kill()
            process.join()
            return Timing(stopped_after, None, True)
        kind, payload = _receive(parent, process)
        process.join()
    finally:
        parent.close()
    if kind == "error":
        raise ReferenceCallError(str(payload))
    seconds, output = payload
    return Timing(seconds, output, False)


def time_reference(call: Callable[[], object], cap: float | None, repeats: int = 1) -> Timing:
    """Best of ``repeats`` capped calls (one more while a call takes under a second).

    Stops at the first call that hits the cap and returns it.
    """
    best = run_capped(call, cap)
    runs = 1
    while not best.capped and (runs < repeats or (best.seconds < 1.0 and runs < 3)):
        timing = run_capped(call, cap)
        if timing.capped:
            return timing
        best = min(best, timing, key=lambda t: t.seconds)
        runs += 1
    return best


def record_reference(
    row: dict,
    side: str,
    call: Callable[[], object],
    cap: float | None,
    ours: np.ndarray,
    offset: float = 0.0,
) -> None:
    """Time Flower's ``call`` for one grid row and write the ``{side}_*`` fields (module doc).

    Parameters
    ----------
    row : dict
        The grid row, holding ``ours_s``; updated in place.
    side : str
        ``"legacy"`` or ``"msg"``.
    call : Callable[[], object]
        Flower's aggregation on the cell, returning a NumPy array.
    cap : float or None
        Seconds the call may run (``None``: no cap).
    ours : numpy.ndarray
        Our rule's output, to check agreement.
    offset : float
        Seconds subtracted from Flower's time before the ratio (the Message
        API's decode); ``row[side + "_total_s"]`` keeps the full time when set.
    """
    if cap is not None:
        row |= {f"{side}_capped": False, f"{side}_cap_s": cap}
    try:
        timing = time_reference(call, cap)
    except ReferenceCallError as exc:
        row[f"{side}_failed"] = str(exc)
        return
    seconds = max(timing.seconds - offset, 1e-9)
    if timing.capped:
        row |= {
            f"{side}_capped": True,
            f"{side}_stopped_after_s": seconds,
            f"{side}_speedup_lower_bound": seconds / row["ours_s"],
        }
        return
    if offset:
        row[f"{side}_total_s"] = timing.seconds
    row[f"{side}_s"] = seconds
    row[f"{side}_diff"] = float(np.abs(ours - np.asarray(timing.output)).max())
    row[f"{side}_speedup"] = seconds / row["ours_s"]


def speedup(row: dict, side: str) -> tuple[float | None, bool]:
    """Flower's time over ours for one side: ``(value, is_lower_bound)``; ``None`` if unknown."""
    if row.get(f"{side}_capped"):
        return row[f"{side}_speedup_lower_bound"], True
    return row.get(f"{side}_speedup"), False
