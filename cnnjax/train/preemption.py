"""Graceful stops: SIGTERM (a cluster's preemption notice) and SIGINT (Ctrl-C) ask the train
loop to finish its current step, save and exit; a second Ctrl-C ends the process at once.

On several processes SIGTERM is left to JAX's preemption service, which
`jax.distributed.initialize` starts: a notice to any process reaches all of them, and they
agree on the step to save at (the one after the furthest any had reached), so that every
process saves the same step together.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

import jax
import orbax.checkpoint as ocp


class StopRequests:
    """Context manager installing the handlers (main thread only; elsewhere it is inert).
    `requested` names the first signal once one arrived, or SIGTERM once the processes
    reached the step their preemption service agreed on (see `reached`)."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            # A Python handler for SIGTERM would take it from JAX's preemption service.
            synced = jax.process_count() > 1 and jax.config.jax_enable_preemption_service
            for signum in (signal.SIGINT,) if synced else (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def reached(self, step: int) -> bool:
        """Whether to stop after global step `step`; called by every process at every step,
        as the preemption service's agreement needs."""
        if self.requested is None and ocp.multihost.reached_preemption(step):
            self.requested = "SIGTERM"
        return self.requested is not None

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
