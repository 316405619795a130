"""Naming BatchNorm layers by module path, to keep some of them in eval mode while training.

A frozen BatchNorm (torch's `bn.eval()` inside a training model) normalises with its
running averages and leaves them untouched, so a frozen stage's features stay those of
the weights it was given. Models take `frozen_norms`, '/'-joined module paths such as
`'bn1'`, `'layer1_0/bn2'` or `'head/bn1'`, and hand each child the paths below it.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from flax import traverse_util

from cnnjax.errors import ConfigError
from cnnjax.models.layers import TorchBatchNorm, torch_batch_norm


def norm_paths(variables: Mapping[str, Any]) -> list[str]:
    """'/'-joined paths of the modules that own `batch_stats`, in tree order, so a caller can
    turn parameter-freeze patterns into `frozen_norms`."""
    stats = traverse_util.flatten_dict(dict(variables.get("batch_stats", {})))
    return list(dict.fromkeys("/".join(key[:-1]) for key in stats))


def nested_norms(frozen_norms: Sequence[str], child: str) -> tuple[str, ...]:
    """The entries of `frozen_norms` inside module `child`, relative to it."""
    prefix = f"{child}/"
    return tuple(path[len(prefix):] for path in frozen_norms if path.startswith(prefix))


def check_frozen_norms(frozen_norms: Sequence[str], variables: Mapping[str, Any]) -> None:
    """Raises ConfigError when `frozen_norms` names a path that is no BatchNorm of the model:
    a misspelt path would otherwise silently leave that layer training."""
    paths = norm_paths(variables)
    unknown = sorted(set(frozen_norms) - set(paths))
    if unknown:
        raise ConfigError(f"frozen_norms {unknown} name no BatchNorm layer of the model; its "
                          f"BatchNorm layers are {paths}.")


def bn_layer(owner: Any, train: bool, name: str, **kwargs: Any) -> TorchBatchNorm:
    """`torch_batch_norm` named `name` inside module `owner`: in eval mode even while
    training when `owner.frozen_norms` holds `name`, and averaged over `owner.norm_axis_name`
    (a `pmap` axis) when it has one."""
    return torch_batch_norm(train and name not in owner.frozen_norms, name=name,
                            axis_name=owner.norm_axis_name, **kwargs)
