"""Graceful stops: SIGTERM (a cluster's preemption notice) and SIGINT (Ctrl-C) ask the train
loop to finish its current step, save and exit; a second Ctrl-C ends the process at once."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any


class StopRequests:
    """Context manager installing the handlers (main thread only; elsewhere it is inert).
    `requested` names the first signal once one arrived."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # From now on Ctrl-C is the system's: it ends the process wherever it is, even inside
        # a long compilation or a save, where no Python handler could run.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if self.requested:  # a repeated SIGTERM: the stop is under way
            return
        self.requested = signal.Signals(signum).name
        print(f"\ncnnjax: {self.requested} received: finishing this step, then saving and "
              f"exiting (Ctrl-C again exits at once, without saving).", file=sys.stderr,
              flush=True)
