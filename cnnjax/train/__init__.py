"""Training: state, pure steps and losses, optimizers and schedules, the epoch loop.

The loop's names import `cnnjax.train.loop` on first use: the loop sits above config,
parallel and checkpoint, which import `cnnjax.train.state`, so importing this package must
not import the loop.
"""

import importlib
from typing import Any

from cnnjax.train.losses import LOSSES, Loss
from cnnjax.train.optim import OPTIMIZERS, SCHEDULES, make_optimizer, make_schedule
from cnnjax.train.state import TrainState, create_train_state
from cnnjax.train.steps import (cross_entropy_loss, eval_step, jit_eval_step, jit_train_step,
                                train_step)

__all__ = ["LOSSES", "Loss", "OPTIMIZERS", "SCHEDULES", "TrainState", "create_train_state",
           "cross_entropy_loss", "eval_step", "evaluate", "evaluate_checkpoint",
           "jit_eval_step", "jit_train_step", "make_optimizer", "make_schedule",
           "train_and_evaluate", "train_step"]


def __getattr__(name: str) -> Any:
    """`evaluate`, `evaluate_checkpoint` and `train_and_evaluate` from the loop (PEP 562)."""
    if name not in ("evaluate", "evaluate_checkpoint", "train_and_evaluate"):
        raise AttributeError(f"module 'cnnjax.train' has no attribute {name!r}")
    return getattr(importlib.import_module("cnnjax.train.loop"), name)
