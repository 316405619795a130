"""The one validation gate of an experiment config: `validate_config` runs before any data is
read and stops at the first field outside its valid values, in one sentence that names the
field and its valid values. The fields themselves are documented in cnnjax/configs/base.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from cnnjax.configs import base
from cnnjax.data.datasets import FRONTENDS, SOURCES
from cnnjax.data.image_datasets import IMAGE_SOURCES
from cnnjax.data.image_pipeline import IMAGE_NORMALIZATIONS
from cnnjax.data.pascal import SUBSETS
from cnnjax.data.pipeline import EVAL_WINDOWS, NORMALIZATIONS, SAMPLINGS
from cnnjax.errors import ConfigError
from cnnjax.models.registry import MODELS, model_fields
from cnnjax.parallel import PARALLEL_MODES
from cnnjax.train.losses import (CROSS_ENTROPY_LOSSES, LOSSES, REGRESSION_LOSSES,
                                  parse_class_weights)
from cnnjax.train.optim import OPTIMIZERS, SCHEDULES
from cnnjax.train.recipe import COMPUTE_DTYPES, FREEZE_NORM_MODES
from cnnjax.train.tasks import task_kind

CHOICES: dict[str, tuple[Any, ...]] = {
    "data.name": (*SOURCES, *IMAGE_SOURCES),
    "data.subset": SUBSETS,
    "data.channels": (1, 3),
    "audio.frontend": FRONTENDS,
    "model.name": tuple(MODELS),
    "optimizer.name": OPTIMIZERS,
    "optimizer.schedule": SCHEDULES,
    "checkpoint.best_mode": ("max", "min"),
    "parallel": PARALLEL_MODES,
    "data.eval_windows": EVAL_WINDOWS,
    "data.sampling": SAMPLINGS,
    "dtype": tuple(COMPUTE_DTYPES),
    "freeze_norm": FREEZE_NORM_MODES,
    "loss.name": LOSSES,
}
POSITIVE = ("num_epochs", "batch_size", "eval_batch_size", "grad_accum_steps",
            "log_every_steps", "optimizer.learning_rate", "loss.huber_delta")
AUDIO_POSITIVE = ("audio.sample_rate", "audio.hop_length", "audio.n_mels", "data.crop_seconds",
                  "augment.filter_points")
FRACTIONS = ("data.val_fraction", "optimizer.warmup_fraction")
# Tuples of positive whole numbers, and how many each must hold (None: any number).
# ml_collections checks only that an override is a tuple: `--config.data.image_size=32`
# arrives as (32,), `=abc` as ('abc',), and the field given twice as both tuples joined.
WHOLE_NUMBER_TUPLES = {"data.image_size": 2, "model.widths": None, "model.dense": None}


def lookup(config: Any, dotted: str) -> Any:
    value = config
    for part in dotted.split("."):
        value = value[part]
    return value


def validate_config(config: Any) -> None:
    """Raises ConfigError for the first field outside its valid values."""
    for field, choices in CHOICES.items():
        value = lookup(config, field)
        if value not in choices:
            raise ConfigError(f"config.{field}={value!r} is not valid; choose one of "
                              f"{list(choices)}.")
    images = config.data.name in IMAGE_SOURCES
    _check_numbers(config, POSITIVE if images else POSITIVE + AUDIO_POSITIVE)
    _check_normalization(config.data.normalization, images)
    if not images:
        _check_noise(config.augment.noise_db, config.audio.top_db)
    if images and config.augment.on_device:
        raise ConfigError("config.augment.on_device=True is for spectrograms; images are "
                          "augmented on the host.")
    _check_model(config)
    _check_loss(config)
    _check_phases(config)
    _check_best_metric(config)


def _check_noise(noise_db: float, top_db: float) -> None:
    if noise_db and not -top_db < noise_db < 0:
        raise ConfigError(f"config.augment.noise_db={noise_db!r} is the loudest noise level in "
                          f"dB of a recording's loudest bin: 0 (off) or between "
                          f"-config.audio.top_db={-top_db!r} and 0.")


def _check_numbers(config: Any, positive: tuple[str, ...]) -> None:
    for field in positive:
        if not lookup(config, field) > 0:
            raise ConfigError(f"config.{field}={lookup(config, field)!r} must be positive.")
    for field in FRACTIONS:
        value = lookup(config, field)
        if not 0 <= value < 1:
            raise ConfigError(f"config.{field}={value!r} must lie in [0, 1).")
    for field, length in WHOLE_NUMBER_TUPLES.items():
        value = lookup(config, field)
        if not _whole_numbers(value, length):
            shown = tuple(value) if isinstance(value, list) else value  # JSON gives lists
            example = "(128,128)" if length == 2 else "(32,64)"
            raise ConfigError(f"config.{field}={shown!r} must be "
                              f"{'two' if length == 2 else 'a tuple of'} positive whole "
                              f"numbers, e.g. --config.{field}='{example}'.")


def _whole_numbers(value: Any, length: int | None) -> bool:
    return (isinstance(value, (tuple, list)) and (length is None or len(value) == length)
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value))


def _check_normalization(normalization: str, images: bool) -> None:
    normalizations = IMAGE_NORMALIZATIONS if images else NORMALIZATIONS
    if normalization not in normalizations:
        raise ConfigError(f"config.data.normalization={normalization!r} is not valid for "
                          f"{'images' if images else 'spectrograms'}; choose one of "
                          f"{list(normalizations)}.")


def _check_model(config: Any) -> None:
    """The model gets the fields it takes; a field it does not take must keep the base
    config's value, so that switching models works and a setting never goes unused."""
    defaults = base.get_config().model
    name = config.model.name
    taken = model_fields(name) & set(defaults)  # the config fields it takes
    for field, value in config.model.items():
        if field in ("name", *taken) or field not in defaults:
            continue
        if _plain(value) != _plain(defaults[field]):
            raise ConfigError(f"config.model.{field}={_plain(value)!r} is not a field of model "
                              f"{name!r}; its fields are {sorted(taken)}: leave "
                              f"config.model.{field} at {_plain(defaults[field])!r} or choose "
                              f"a model that takes it.")
    if config.model.in_channels != config.data.channels:
        raise ConfigError(f"config.model.in_channels={config.model.in_channels} differs from "
                          f"config.data.channels={config.data.channels}; make them equal.")


def _plain(value: Any) -> Any:
    """Tuples for lists (a config read back from JSON holds lists)."""
    return tuple(_plain(v) for v in value) if isinstance(value, (list, tuple)) else value


def _check_loss(config: Any) -> None:
    loss = config.loss
    regression = loss.name in REGRESSION_LOSSES
    weights = parse_class_weights(loss.class_weights)
    if not 0.0 <= loss.label_smoothing <= 1.0:
        raise ConfigError(f"config.loss.label_smoothing={loss.label_smoothing!r} must lie in "
                          f"[0, 1].")
    if regression and (loss.label_smoothing or weights is not None):
        raise ConfigError(f"config.loss.name={loss.name!r} regresses: label smoothing and "
                          f"class weights are for classification; set "
                          f"config.loss.label_smoothing=0 and class_weights='none'.")
    if loss.name == "hinge" and loss.label_smoothing:
        raise ConfigError("config.loss.label_smoothing is for the cross-entropy losses, "
                          "not 'hinge'; set it to 0.")
    _check_logit_adjustment(loss, weights)
    _check_balanced_sampling(config.data.sampling, loss, weights, regression)
    if regression and config.augment.mixup_alpha > 0:
        raise ConfigError(f"config.augment.mixup_alpha mixes class labels; set it to 0 for "
                          f"the regression loss {loss.name!r}.")


def _check_balanced_sampling(sampling: str, loss: Any, weights: Any, regression: bool
                             ) -> None:
    """Balanced sampling is one of three answers to rare classes; two at once over-correct."""
    if sampling != "balanced":
        return
    if regression:
        raise ConfigError(f"config.data.sampling='balanced' draws by class; the regression "
                          f"loss {loss.name!r} has none. Use 'shuffle'.")
    if weights is not None or loss.logit_adjustment:
        raise ConfigError("config.data.sampling='balanced' already shows every class equally "
                          "often; set config.loss.class_weights='none' and "
                          "config.loss.logit_adjustment=0.")


def _check_logit_adjustment(loss: Any, weights: Any) -> None:
    tau = loss.logit_adjustment
    if not tau >= 0:
        raise ConfigError(f"config.loss.logit_adjustment={tau!r} must be >= 0 (0 is off).")
    if tau and loss.name not in CROSS_ENTROPY_LOSSES:
        raise ConfigError(f"config.loss.logit_adjustment is for the cross-entropy losses, not "
                          f"{loss.name!r}; set it to 0.")
    if tau and weights is not None:
        raise ConfigError("config.loss.logit_adjustment and config.loss.class_weights both "
                          "correct for the class frequencies; set class_weights='none' or "
                          "logit_adjustment=0.")


def _check_phases(config: Any) -> None:
    unfreeze_after = int(config.fine_tune.unfreeze_after)
    if unfreeze_after <= 0:
        return
    if unfreeze_after >= config.num_epochs:
        raise ConfigError(f"config.fine_tune.unfreeze_after={unfreeze_after} leaves no epoch "
                          f"unfrozen of config.num_epochs={config.num_epochs}.")
    if not tuple(config.freeze):
        raise ConfigError("config.fine_tune.unfreeze_after needs config.freeze to name what "
                          "is frozen before (e.g. ('body',)).")


def _check_best_metric(config: Any) -> None:
    """The best checkpoint's metric must be one the run's task records, or no save could
    rank."""
    name = config.loss.name
    metric, keys = config.checkpoint.best_metric, task_kind(name).record_keys()
    if metric and metric not in keys:
        raise ConfigError(f"config.checkpoint.best_metric={metric!r} is not recorded when "
                          f"config.loss.name={name!r}; choose one of {list(keys)} (with "
                          f"config.checkpoint.best_mode='min' for losses and errors).")


def sibling_config(config_file: str, name: str) -> Any:
    """`get_config()` of the experiment `<name>.py` in `config_file`'s folder, so an experiment
    can extend another one wherever the command is launched from."""
    path = Path(config_file).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"cnnjax_experiment_{name}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"no experiment config at {path}.")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()
