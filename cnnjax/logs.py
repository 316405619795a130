"""cnnjax's one logger: every message cnnjax writes goes through `logger`, shown on stderr
as `cnnjax: <message>` (`cnnjax: warning: <message>` for a warning).

It is a logger of Python's `logging`, the tree absl's logging lives in, with a level of its
own: `--log_level` (debug | info | warning | error) sets cnnjax's messages, while the
libraries' (orbax writes a dozen INFO lines per checkpoint) follow absl's `--verbosity`,
which `cnnjax.main` keeps at warnings unless given. On several processes only process 0
speaks, except errors, which every process shows.

    from cnnjax.logs import logger
    logger.info("wrote %s", path)
"""

from __future__ import annotations

import logging
import sys

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


class _ProcessZero(logging.Filter):
    """Passes process 0's records, and every process's errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        import jax  # here: importing cnnjax.logs must not start JAX

        return jax.process_index() == 0


class _Stderr(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time (tests and notebooks replace it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _Lines(logging.Formatter):
    """`cnnjax: <message>`, with `warning: ` or `error: ` before the message at those levels."""

    def format(self, record: logging.LogRecord) -> str:
        level = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        return f"cnnjax: {level}{super().format(record)}"


def _make_logger() -> logging.Logger:
    made = logging.getLogger("cnnjax")
    handler = _Stderr()
    handler.setFormatter(_Lines())
    handler.addFilter(_ProcessZero())
    made.addHandler(handler)
    made.setLevel(logging.INFO)
    made.propagate = False  # absl's handler on the root logger would print it again
    return made


logger = _make_logger()


def set_log_level(name: str) -> None:
    """cnnjax's own messages from `name` (a key of LEVELS) up; the libraries' keep theirs."""
    logger.setLevel(LEVELS[name])
