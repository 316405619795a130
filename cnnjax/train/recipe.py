"""From an experiment config to what a training phase runs: the model (which BatchNorm layers
stay frozen), the optimizer (which parameters are frozen, the learning rates per group, the
schedule), and the loss (its kind, label smoothing, class weights, target scaling)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np
import optax

from cnnjax.errors import ConfigError, DataError
from cnnjax.models.norms import norm_paths
from cnnjax.models.registry import get_model
from cnnjax.train.losses import (REGRESSION_LOSSES, Loss, balanced_class_weights,
                                  logit_offsets, parse_class_weights)
from cnnjax.train.optim import make_optimizer
from cnnjax.train.param_groups import (frozen_mask, matches, param_paths,
                                       unmatched_patterns)
from cnnjax.train.phases import Phase, phase_of_epoch, training_phases

FREEZE_NORM_MODES = ("train", "frozen")


def make_loss(config: Any, train_labels: np.ndarray, num_classes: int,
              train_targets: np.ndarray | None = None) -> Loss:
    """`config.loss`: its `name`, label smoothing, class weights 'none', 'balanced'
    (n / (k * n_c) over the training labels) or explicit numbers in class order, logit
    adjustment (tau * log of the training labels' class frequencies), and `huber_delta`. A
    regression loss scales the model's output by the training targets' mean and standard
    deviation (see `Loss`), so the data must carry targets."""
    name = config.loss.name
    scaling: dict[str, float] = {}
    if name in REGRESSION_LOSSES:
        if train_targets is None:
            raise DataError(f"config.loss.name={name!r} regresses on a numeric target per "
                            f"recording, but config.data.name={config.data.name!r} has none: "
                            f"give an audio_folder CSV a 'target' column, or use a "
                            f"classification loss.")
        scaling = _target_scaling(np.asarray(train_targets, np.float64))
    weights = parse_class_weights(config.loss.class_weights)
    if weights == "balanced":
        weights = balanced_class_weights(train_labels, num_classes)
    elif weights is not None and len(weights) != num_classes:  # only the data knows how many
        raise ConfigError(f"config.loss.class_weights={config.loss.class_weights!r} must be "
                          f"'none', 'balanced' or {num_classes} positive comma-separated "
                          f"numbers.")
    tau = float(config.loss.logit_adjustment)
    offsets = logit_offsets(train_labels, num_classes, tau) if tau else None
    return Loss(label_smoothing=float(config.loss.label_smoothing), class_weights=weights,
                name=name, huber_delta=float(config.loss.huber_delta), logit_offsets=offsets,
                **scaling)


def _target_scaling(targets: np.ndarray) -> dict[str, float]:
    """The training targets' mean and standard deviation (1 when they are all equal)."""
    return {"target_mean": float(targets.mean()), "target_std": float(targets.std()) or 1.0}


@dataclass(frozen=True)
class PhaseSetup:
    """What one training phase runs, built once per run."""
    phase: Phase
    model: nn.Module
    tx: optax.GradientTransformation
    schedule: Callable[[int], Any]  # the head group's learning rate at a global step
    frozen_count: int  # parameters (scalars) that do not train in this phase


def _frozen(phase: Phase, params: Any, norms: list[str], freeze_norm: str) -> Any:
    """The phase's frozen mask. In 'train' mode BatchNorm parameters keep training in frozen
    parts (fastai's default), so only the other frozen parameters are masked."""
    unmatched = unmatched_patterns(params, phase.freeze)
    if unmatched:
        raise ConfigError(f"config.freeze patterns {unmatched} match no parameter of the model.")
    frozen = frozen_mask(params, phase.freeze)
    if freeze_norm == "train":
        owners = set(norms)
        frozen = jax.tree.map(lambda is_frozen, path: is_frozen and
                              path.rsplit("/", 1)[0] not in owners,
                              frozen, param_paths(params))
    return frozen


# config.dtype: what convolutions and matmuls compute in. Parameters, BatchNorm statistics,
# the loss and the optimizer state stay float32 either way.
COMPUTE_DTYPES = {"float32": jax.numpy.float32, "bfloat16": jax.numpy.bfloat16}


def phase_setup(config: Any, phase: Phase, num_outputs: int, input_shape: tuple[int, ...],
                steps_per_epoch: int, norm_axis_name: str | None = None) -> PhaseSetup:
    """The model and optimizer of `phase`; the optimizer state's structure is the same for
    every phase, so a run carries it from one to the next. The model has `num_outputs` output
    units (`Task.num_outputs`) and computes in `config.dtype`; `norm_axis_name` is the pmap
    axis its BatchNorm averages over."""
    fields = {**config.model.to_dict(), "dtype": COMPUTE_DTYPES[config.dtype],
              "norm_axis_name": norm_axis_name}
    plain = get_model(fields, num_classes=num_outputs)
    shapes = jax.eval_shape(lambda: plain.init(jax.random.PRNGKey(0),
                                               jax.numpy.zeros((1, *input_shape)), train=False))
    params, norms = shapes["params"], norm_paths(shapes)
    frozen = _frozen(phase, params, norms, config.freeze_norm)
    frozen_norms: tuple[str, ...] = ()
    if config.freeze_norm == "frozen" and phase.freeze:
        frozen_norms = tuple(n for n in norms if matches(f"{n}/scale", phase.freeze))
    model = plain.clone(frozen_norms=frozen_norms) if frozen_norms else plain
    tx, schedule = make_optimizer(
        phase.optimizer, phase.num_epochs * steps_per_epoch, params, frozen=frozen,
        start_step=(phase.first_epoch - 1) * steps_per_epoch)
    frozen_count = sum(int(np.prod(p.shape)) for p, f in
                       zip(jax.tree.leaves(params), jax.tree.leaves(frozen)) if f)
    return PhaseSetup(phase, model, tx, schedule, frozen_count)


def phase_setups(config: Any, num_outputs: int, input_shape: tuple[int, ...],
                 steps_per_epoch: int, norm_axis_name: str | None = None
                 ) -> tuple[PhaseSetup, ...]:
    """Every phase's model, optimizer and schedule (`training_phases`), in epoch order."""
    return tuple(phase_setup(config, phase, num_outputs, input_shape, steps_per_epoch,
                             norm_axis_name) for phase in training_phases(config))


def setup_of_epoch(setups: tuple[PhaseSetup, ...], epoch: int) -> PhaseSetup:
    """The setup of the phase `epoch` (1-based) belongs to."""
    phases = [setup.phase for setup in setups]
    return setups[phases.index(phase_of_epoch(phases, epoch))]
