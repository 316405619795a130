"""The weights a fresh run starts from: its own random initialisation, ImageNet weights
(`config.init.pretrained`), or another run's (`config.init_from`). Optimizer state and step
always start fresh; resuming a run is the checkpoints' job, not this."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from cnnjax.checkpoint import CheckpointError, read_variables
from cnnjax.errors import ConfigError
from cnnjax.pretrained import load_torchvision, modules_after, read_metadata
from cnnjax.train.state import TrainState

WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".safetensors", ".npz")
# What a network was trained to see: `--mode=export` records these in the weights file, and a
# run that starts from the file names those its own config changes.
INPUT_FIELDS = ("audio.sample_rate", "audio.n_fft", "audio.hop_length", "audio.n_mels",
                "audio.fmin", "audio.fmax", "audio.top_db", "audio.remove_band_means",
                "data.crop_seconds", "data.image_size", "data.channels", "data.normalization")


def input_settings(config: Any) -> dict[str, Any]:
    """The config's values of `INPUT_FIELDS`, as JSON would hold them."""
    settings = {}
    for field in INPUT_FIELDS:
        section, name = field.split(".")
        value = config[section][name]
        settings[field] = list(value) if isinstance(value, (tuple, list)) else value
    return settings


def input_differences(metadata: dict[str, str], config: Any) -> list[str]:
    """`field: file value -> config value` for each input setting recorded in an exported
    file's metadata that the config sets otherwise."""
    recorded = json.loads(metadata.get("input", "{}"))
    ours = input_settings(config)
    return [f"{field} {value} -> {ours[field]}" for field, value in recorded.items()
            if field in ours and ours[field] != value]


def _with_variables(state: TrainState, variables: dict[str, Any], source: str) -> TrainState:
    """`state` with `variables` in place of its params and batch_stats, which must match in
    names and shapes. A model with its own head (no torchvision `fc`) keeps its freshly
    initialised head and takes the body alone."""
    merged = {}
    for name in ("params", "batch_stats"):
        own, ported = getattr(state, name), dict(variables[name])
        if "fc" not in own:
            ported.pop("fc", None)
            ported.update({key: value for key, value in own.items() if key == "head"})
        if jax.tree.map(jnp.shape, ported) != jax.tree.map(jnp.shape, dict(own)):
            raise ConfigError(f"the weights of {source} do not fit config.model "
                              f"({name} differ in names or shapes); use the torchvision "
                              f"architecture of the file.")
        merged[name] = jax.tree.map(jnp.asarray, ported)
    return state.replace(**merged)


def initial_state(config: Any, state: TrainState, num_classes: int,
                  in_channels: int) -> tuple[TrainState, str]:
    """`state` with the weights the config asks a fresh run to start from, and a line that
    says which. Pretrained classifiers are replaced (seeded) when the class count differs;
    a one-channel input gets the RGB stem summed over its channels. A model cut at
    `config.model.features_at` takes the body up to that block; the line names the
    pretrained modules after the cut, which it leaves out."""
    pretrained, init_from = config.init.pretrained, config.init_from
    if pretrained and init_from:
        raise ConfigError("config.init.pretrained and config.init_from both name starting "
                          "weights; keep one.")
    source = pretrained or init_from
    if not source:
        return state, "starting from a random initialisation"
    if pretrained or Path(init_from).suffix in WEIGHT_FILE_SUFFIXES:
        arch, features_at = config.model.name, config.model.features_at
        variables = load_torchvision(source, arch, num_classes=num_classes,
                                     in_channels=in_channels, seed=config.seed,
                                     features_at=features_at,
                                     aux_logits=config.model.aux_logits)
        said = f"starting from the weights {source}"
        if features_at:
            said += (f" up to {features_at} (not using "
                     f"{', '.join(modules_after(arch, features_at))})")
        metadata = read_metadata(source)
        if metadata.get("source"):
            said += f" ({metadata['source']})"
        differences = input_differences(metadata, config)
        if differences:
            said += ("; warning: its network was trained on other inputs: "
                     + ", ".join(differences))
        return _with_variables(state, variables, source), said
    try:
        variables = read_variables(init_from, state.variables)
    except CheckpointError as error:
        raise CheckpointError(f"config.init_from: {error}") from None
    return state.replace(**variables), f"starting from the weights of the run {init_from}"
