"""Training: state, pure steps and losses, optimizers and schedules, the epoch loop."""

from cnnjax.train.loop import evaluate, evaluate_checkpoint, train_and_evaluate
from cnnjax.train.losses import LOSSES, Loss
from cnnjax.train.optim import OPTIMIZERS, SCHEDULES, make_optimizer, make_schedule
from cnnjax.train.state import TrainState, create_train_state
from cnnjax.train.steps import (cross_entropy_loss, eval_step, jit_eval_step, jit_train_step,
                                train_step)

__all__ = ["LOSSES", "Loss", "OPTIMIZERS", "SCHEDULES", "TrainState", "create_train_state",
           "cross_entropy_loss", "eval_step", "evaluate", "evaluate_checkpoint",
           "jit_eval_step", "jit_train_step", "make_optimizer", "make_schedule",
           "train_and_evaluate", "train_step"]
