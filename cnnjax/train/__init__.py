"""Training: state, pure steps and losses, optimizers and schedules, the run's setup, the
epoch loop and the per-recording validation it runs."""

from cnnjax.train.loop import train_and_evaluate
from cnnjax.train.losses import LOSSES, Loss, cross_entropy_loss
from cnnjax.train.optim import OPTIMIZERS, SCHEDULES, make_optimizer, make_schedule
from cnnjax.train.state import TrainState, create_train_state
from cnnjax.train.steps import eval_step, jit_eval_step, jit_train_step, train_step
from cnnjax.train.validation import evaluate

__all__ = ["LOSSES", "Loss", "OPTIMIZERS", "SCHEDULES", "TrainState", "create_train_state",
           "cross_entropy_loss", "eval_step", "evaluate", "jit_eval_step", "jit_train_step",
           "make_optimizer", "make_schedule", "train_and_evaluate", "train_step"]
