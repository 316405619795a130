"""Model registry: `config.model.name` plus the keyword fields that model takes -> a Flax
module."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn

from cnnjax.errors import ConfigError

from cnnjax.models.inception import InceptionV3
from cnnjax.models.resnet import ResNet, resnet18, resnet34, resnet50
from cnnjax.models.simple_cnn import SimpleCNN

MODELS: dict[str, Callable[..., nn.Module]] = {
    "simple_cnn": SimpleCNN,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "inception_v3": InceptionV3,
}


def get_model(model_config: Mapping[str, Any], *, num_classes: int | None = None) -> nn.Module:
    """Builds `model_config.name` from the fields that model takes (`model_fields`), so one
    config can hold the fields of every model and switch between them (the config's gate,
    cnnjax.config.validate_config, checks that the others keep their base values).

    `num_classes`, when given (the data knows it), overrides the config's value. A name or
    field no model has raises a ConfigError naming the valid ones (research scripts call
    this without the gate). Lists become tuples: a jitted step keys on the model, so its
    fields must hash.
    """
    fields = dict(model_config)
    name = fields.pop("name")
    if name not in MODELS:
        raise ConfigError(f"config.model.name={name!r} is not a model; choose one of "
                          f"{sorted(MODELS)}.")
    known = set().union(*map(model_fields, MODELS))
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ConfigError(f"config.model.{unknown[0]} is not a field of any model; model "
                          f"{name!r} takes {sorted(model_fields(name))}.")
    taken = model_fields(name)
    fields = {key: tuple(value) if isinstance(value, list) else value
              for key, value in fields.items() if key in taken}
    if num_classes is not None:
        fields["num_classes"] = num_classes
    return MODELS[name](**fields)


def model_fields(name: str) -> set[str]:
    """The keyword fields model `name` takes."""
    constructor = MODELS[name]
    if isinstance(constructor, type) and issubclass(constructor, nn.Module):
        return _module_fields(constructor)
    # The resnet constructors fix the architecture and pass every other field on to ResNet.
    return _module_fields(ResNet) - {"stage_sizes", "block"}


def _module_fields(module: type[nn.Module]) -> set[str]:
    return {f for f in module.__dataclass_fields__ if f not in ("parent", "name")}
