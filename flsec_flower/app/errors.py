"""One-line user errors in the log of a ``flwr run``.

Flower's simulation process logs an exception raised by the ServerApp as
``Simulation raised an exception`` followed by its traceback, and marks the
run ``finished:failed``. For a user error (a bad run-config value, an
unknown rule name, a missing or corrupt data file) the traceback buries the
one line that matters. :class:`OneLineUserErrors`, a filter on Flower's
logger, rewrites such a record into the line the ``flsec`` CLI prints,
``flsec: error: <message naming the key>``, without the traceback; the run
still fails, and ``flwr ls`` shows the message in its status details.
"""

from __future__ import annotations

import logging

from flwr.common.logger import FLOWER_LOGGER

from flsec_flower.app.cli import user_errors


class OneLineUserErrors(logging.Filter):
    """Turn a logged user error into ``flsec: error: <message>`` with no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite ``record`` in place when its exception is a user error; keep every record."""
        err = record.exc_info[1] if record.exc_info else None
        if err is not None and isinstance(err, user_errors()):
            record.msg, record.args = "flsec: error: %s", (err,)
            record.exc_info, record.exc_text = None, None
        return True


def install() -> None:
    """Add :class:`OneLineUserErrors` to Flower's logger (once per process)."""
    if not any(isinstance(f, OneLineUserErrors) for f in FLOWER_LOGGER.filters):
        FLOWER_LOGGER.addFilter(OneLineUserErrors())
