"""Checks of an experiment config that fail early with one sentence naming the field."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from cnnjax.data.datasets import FRONTENDS, SOURCES
from cnnjax.data.image_datasets import IMAGE_SOURCES
from cnnjax.data.image_pipeline import IMAGE_NORMALIZATIONS
from cnnjax.data.pascal import SUBSETS
from cnnjax.data.pipeline import EVAL_WINDOWS, NORMALIZATIONS
from cnnjax.errors import ConfigError
from cnnjax.models.registry import MODELS
from cnnjax.parallel import PARALLEL_MODES
from cnnjax.train.losses import LOSSES, REGRESSION_LOSSES
from cnnjax.train.optim import OPTIMIZERS, SCHEDULES
from cnnjax.train.recipe import COMPUTE_DTYPES

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
    "dtype": tuple(COMPUTE_DTYPES),
}
POSITIVE = ("num_epochs", "batch_size", "eval_batch_size", "grad_accum_steps",
            "log_every_steps", "optimizer.learning_rate",
            "audio.sample_rate", "audio.hop_length", "audio.n_mels", "data.crop_seconds")
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
    normalizations = IMAGE_NORMALIZATIONS if images else NORMALIZATIONS
    if config.data.normalization not in normalizations:
        raise ConfigError(f"config.data.normalization={config.data.normalization!r} is not "
                          f"valid for {'images' if images else 'spectrograms'}; choose one of "
                          f"{list(normalizations)}.")
    for field in POSITIVE:
        if not lookup(config, field) > 0:
            raise ConfigError(f"config.{field}={lookup(config, field)!r} must be positive.")
    for field in FRACTIONS:
        value = lookup(config, field)
        if not 0 <= value < 1:
            raise ConfigError(f"config.{field}={value!r} must lie in [0, 1).")
    for field, length in WHOLE_NUMBER_TUPLES.items():
        section, name = field.split(".")
        value = config[section].get(name)
        if value is not None and not _whole_numbers(value, length):
            shown = tuple(value) if isinstance(value, list) else value  # JSON gives lists
            example = "(128,128)" if length == 2 else "(32,64)"
            raise ConfigError(f"config.{field}={shown!r} must be "
                              f"{'two' if length == 2 else 'a tuple of'} positive whole "
                              f"numbers, e.g. --config.{field}='{example}'.")
    _check_loss(config.loss)
    if config.model.get("in_channels", config.data.channels) != config.data.channels:
        raise ConfigError(f"config.model.in_channels={config.model.in_channels} differs from "
                          f"config.data.channels={config.data.channels}; make them equal.")


def _check_loss(loss: Any) -> None:
    """The loss's name, and smoothing only where it applies, before any data."""
    if loss.name not in LOSSES:
        raise ConfigError(f"config.loss.name={loss.name!r} is not valid; choose one of "
                          f"{list(LOSSES)}.")
    if not 0.0 <= loss.label_smoothing <= 1.0:
        raise ConfigError(f"label_smoothing={loss.label_smoothing!r} must lie in [0, 1].")
    weighted = str(loss.class_weights).strip() not in ("", "none")
    if loss.name in REGRESSION_LOSSES and (loss.label_smoothing or weighted):
        raise ConfigError(f"config.loss.name={loss.name!r} regresses: label smoothing and "
                          f"class weights are for classification; set "
                          f"config.loss.label_smoothing=0 and class_weights='none'.")
    if loss.name == "hinge" and loss.label_smoothing:
        raise ConfigError("config.loss.label_smoothing is for the cross-entropy losses, "
                          "not 'hinge'; set it to 0.")
    if not loss.huber_delta > 0:
        raise ConfigError(f"config.loss.huber_delta={loss.huber_delta!r} must be positive.")


def _whole_numbers(value: Any, length: int | None) -> bool:
    return (isinstance(value, (tuple, list)) and (length is None or len(value) == length)
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value))


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
