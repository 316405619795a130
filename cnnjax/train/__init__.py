"""Training: state, pure steps and losses, optimizers and schedules, the run's setup, the
epoch loop and the per-recording validation it runs.

`train_and_evaluate` and `evaluate` import their modules on first use: those sit above
config, parallel and checkpoint, which import `cnnjax.train.state`, so importing this
package must not import them.
"""

import importlib
from typing import Any

from cnnjax.train.losses import LOSSES, Loss, cross_entropy_loss
from cnnjax.train.optim import OPTIMIZERS, SCHEDULES, make_optimizer, make_schedule
from cnnjax.train.state import TrainState, create_train_state
from cnnjax.train.steps import eval_step, jit_eval_step, jit_train_step, train_step

_ON_FIRST_USE = {"train_and_evaluate": "cnnjax.train.loop", "evaluate": "cnnjax.train.validation"}

__all__ = ["LOSSES", "Loss", "OPTIMIZERS", "SCHEDULES", "TrainState", "create_train_state",
           "cross_entropy_loss", "eval_step", "evaluate", "jit_eval_step", "jit_train_step",
           "make_optimizer", "make_schedule", "train_and_evaluate", "train_step"]


def __getattr__(name: str) -> Any:
    """`train_and_evaluate` and `evaluate` from their modules (PEP 562)."""
    if name not in _ON_FIRST_USE:
        raise AttributeError(f"module 'cnnjax.train' has no attribute {name!r}")
    return getattr(importlib.import_module(_ON_FIRST_USE[name]), name)
