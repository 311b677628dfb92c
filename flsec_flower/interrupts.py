"""Ctrl-C and SIGTERM during a simulation: stop within seconds, keep what finished.

Flower's simulation runs the server in a thread and Ray's actors in other
processes; a ``KeyboardInterrupt`` raised into that machinery hangs. While
:func:`handle_interrupts` is active, the first SIGINT or SIGTERM marks every
unfinished run ``interrupted`` in its ``status.json`` (each finished round's
metrics line and checkpoint are already on disk), prints one line saying
how to resume, shuts Ray down (at most :data:`SHUTDOWN_SECONDS`) and exits
with status 130. A second signal exits at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

from flsec_flower.results import RunRecorder

EXIT_INTERRUPTED = 130
SHUTDOWN_SECONDS = 5.0


def _shutdown_ray() -> None:
    """``ray.shutdown()`` in a thread, abandoned after :data:`SHUTDOWN_SECONDS`."""
    if "ray" not in sys.modules:
        return
    import ray

    worker = threading.Thread(target=ray.shutdown, daemon=True)
    worker.start()
    worker.join(SHUTDOWN_SECONDS)


def resume_hint(recorders: list[RunRecorder], signame: str) -> str:
    """The one line printed on an interrupt: what stopped and how to resume."""
    unfinished = [r for r in recorders if not r.finished]
    if not unfinished:
        return f"flsec: {signame}: stopped"
    first = unfinished[0]
    dirs = " ".join(str(r.run_dir) for r in unfinished)
    return (
        f"flsec: {signame}: stopped after round {first.rounds_completed} of {first.cfg.rounds}; "
        f"resume with: flsec run --resume {dirs}"
    )


@contextlib.contextmanager
def handle_interrupts(recorders: list[RunRecorder]) -> Iterator[None]:
    """Handle SIGINT and SIGTERM as described in the module docstring.

    Outside the main thread (where Python cannot install signal handlers)
    this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    state = {"count": 0}

    def handler(signum: int, frame: FrameType | None) -> None:
        state["count"] += 1
        if state["count"] > 1:
            os._exit(EXIT_INTERRUPTED)
        name = signal.Signals(signum).name
        for recorder in recorders:
            if not recorder.finished:
                recorder.mark("interrupted", f"stopped by {name}")
        print(file=sys.stderr)
        print(resume_hint(recorders, name), file=sys.stderr, flush=True)
        sys.stdout.flush()
        _shutdown_ray()
        os._exit(EXIT_INTERRUPTED)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
