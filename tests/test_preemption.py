"""StopRequests on one process: the signals are its own, and the loop's per-step question
answers them (the two-process agreement is in test_parallel)."""

import os
import signal

from cnnjax.train.preemption import StopRequests


def test_one_process_stops_after_its_own_sigterm_and_restores_the_handlers():
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    with StopRequests() as stop:
        assert not stop.reached(1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.reached(2) and stop.requested == "SIGTERM"
        # Ctrl-C now belongs to the system: a second one ends the process at once.
        assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL
    assert {signum: signal.getsignal(signum) for signum in before} == before
