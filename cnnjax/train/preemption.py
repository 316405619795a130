"""Graceful stops: SIGTERM (a cluster's preemption notice) and SIGINT (Ctrl-C) ask the train
loop to finish its current step, save and exit; a second SIGINT exits at once."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any


class StopRequests:
    """Context manager installing the handlers (main thread only; elsewhere it is inert).
    `requested` names the signal once one arrived."""

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
        name = signal.Signals(signum).name
        if self.requested and signum == signal.SIGINT:
            print(f"cnnjax: {name} again: exiting now without saving.", file=sys.stderr,
                  flush=True)
            raise SystemExit(130)
        self.requested = name
        print(f"\ncnnjax: {name} received: finishing this step, then saving and exiting "
              f"(Ctrl-C again exits at once).", file=sys.stderr, flush=True)
