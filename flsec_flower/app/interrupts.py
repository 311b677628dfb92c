"""Ctrl-C, SIGTERM and an unreachable Ray during a simulation: stop within seconds.

Flower's simulation runs the server in a thread and Ray's actors in other
processes; a ``KeyboardInterrupt`` raised into that machinery hangs. While
:func:`handle_interrupts` is active, the first SIGINT or SIGTERM
shuts Ray down (at most :data:`SHUTDOWN_SECONDS`), marks every unfinished
run ``interrupted`` in its ``status.json`` (each finished round's metrics
line and checkpoint are already on disk), prints one line saying how to
resume and exits with status 130. A second signal exits at once.

:func:`ray_start_watchdog` covers the other way a run can hang before its
first round: Ray that cannot start or cannot reach its GCS retries forever.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

from flsec_flower.results import RunRecorder

EXIT_INTERRUPTED = 130
EXIT_RAY_UNAVAILABLE = 1
SHUTDOWN_SECONDS = 5.0
RAY_START_SECONDS = 60.0
"""Default of ``$FLSEC_RAY_START_TIMEOUT``: how long Ray may take to start or attach."""


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
def handle_interrupts(recorders: list[RunRecorder]) -> Iterator[Callable[[], None]]:
    """Handle SIGINT and SIGTERM as described in the module docstring.

    Yields a function that installs the handlers again: ``ray.init`` puts
    its own SIGTERM handler in place, so call it once Ray is up. Outside the
    main thread (where Python cannot install signal handlers) this does
    nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    state = {"count": 0}

    def handler(signum: int, frame: FrameType | None) -> None:
        state["count"] += 1
        if state["count"] > 1:
            os._exit(EXIT_INTERRUPTED)
        name = signal.Signals(signum).name
        _shutdown_ray()  # first: the server thread may record a round meanwhile
        for recorder in recorders:
            if not recorder.finished:
                recorder.mark("interrupted", f"stopped by {name}")
        sys.stdout.flush()
        print(file=sys.stderr)
        print(resume_hint(recorders, name), file=sys.stderr, flush=True)
        os._exit(EXIT_INTERRUPTED)

    def install() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handler)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    install()
    try:
        yield install
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def ray_start_watchdog(recorders: list[RunRecorder]) -> Iterator[None]:
    """Fail the run with one line when Ray is not up within ``$FLSEC_RAY_START_TIMEOUT`` s.

    A daemon thread waits for ``ray.is_initialized()``; when the time is up
    first, it marks every unfinished run ``failed``, prints what to check
    (``RAY_ADDRESS``, loopback networking, free space in the temp folder)
    and exits with status 1.
    """
    seconds = float(os.environ.get("FLSEC_RAY_START_TIMEOUT", RAY_START_SECONDS))
    done = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + seconds
        while not done.wait(0.5):
            is_initialized = getattr(sys.modules.get("ray"), "is_initialized", None)
            if is_initialized is not None and is_initialized():
                return
            if time.monotonic() > deadline:
                address = os.environ.get("RAY_ADDRESS") or "a new local cluster"
                message = (
                    f"Ray did not start within {seconds:g} s ({address}): check RAY_ADDRESS, "
                    "that loopback networking works and that the temp folder has space"
                )
                for recorder in recorders:
                    if not recorder.finished:
                        recorder.mark("failed", message)
                print(f"flsec: error: {message}", file=sys.stderr, flush=True)
                os._exit(EXIT_RAY_UNAVAILABLE)

    thread = threading.Thread(target=watch, daemon=True, name="flsec-ray-watchdog")
    thread.start()
    try:
        yield
    finally:
        done.set()
