"""Model registry: `config.model.name` plus keyword fields -> a Flax module."""

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
    """Builds `model_config.name` with the other fields as keyword arguments.

    `num_classes`, when given (the data knows it), overrides the config's value.
    Unknown names or fields raise a ConfigError naming the valid choices. Lists become
    tuples: a jitted step keys on the model, so its fields must hash.
    """
    fields = {key: tuple(value) if isinstance(value, list) else value
              for key, value in dict(model_config).items()}
    name = fields.pop("name")
    if name not in MODELS:
        raise ConfigError(f"config.model.name={name!r} is not a model; choose one of "
                         f"{sorted(MODELS)}.")
    if num_classes is not None:
        fields["num_classes"] = num_classes
    constructor = MODELS[name]
    accepted = _accepted_fields(constructor)
    unknown = sorted(set(fields) - accepted)
    if unknown:
        raise ConfigError(f"config.model.{unknown[0]} is not a field of model {name!r}; its "
                         f"fields are {sorted(accepted)}.")
    return constructor(**fields)


def _accepted_fields(constructor: Callable[..., nn.Module]) -> set[str]:
    if isinstance(constructor, type) and issubclass(constructor, nn.Module):
        return _module_fields(constructor)
    # The resnet constructors fix the architecture and pass every other field on to ResNet.
    return _module_fields(ResNet) - {"stage_sizes", "block"}


def _module_fields(module: type[nn.Module]) -> set[str]:
    return {f for f in module.__dataclass_fields__ if f not in ("parent", "name")}
