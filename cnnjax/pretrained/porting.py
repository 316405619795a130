"""torchvision/timm ResNet state dicts -> cnnjax Flax variables, strictly and exactly.

The mapping is derived from the Flax variable tree itself, not from a hand-written table:
every Flax path has exactly one torch name (`params/layer2_0/downsample_0/kernel` is
`layer2.0.downsample.0.weight`), so a file fits a model when the two name sets are equal
and every shape agrees. timm's ResNet-18/34/50 use torchvision's names, so their files
load the same way. Converted files (cnnjax's own `.safetensors`, keys like
`params/layer1_0/conv1/kernel`, Flax layouts) are recognised by their keys and load too.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnnjax import models
from cnnjax.models.layers import torch_dense
from cnnjax.pretrained.errors import WeightsError
from cnnjax.pretrained.files import read_weights, to_numpy, write_safetensors

ARCHS = ("resnet18", "resnet34", "resnet50")
CONVERTED_FORMAT = "cnnjax-flax"  # the `format` entry of a converted file's metadata
COLLECTIONS = ("params", "batch_stats")
FlaxPath = tuple[str, ...]
Variables = dict[str, Any]
Source = str | os.PathLike | Mapping[str, Any]

_TORCH_LEAF = {("params", "kernel"): "weight", ("params", "scale"): "weight",
               ("params", "bias"): "bias", ("batch_stats", "mean"): "running_mean",
               ("batch_stats", "var"): "running_var"}
_STEM = ("params", "conv1", "kernel")
_HEAD = ("params", "fc")
# (blocks per stage, bottleneck) -> torchvision's name, to say what a misfit file looks like.
_SHAPES = {((2, 2, 2, 2), False): "resnet18", ((3, 4, 6, 3), False): "resnet34",
           ((3, 4, 6, 3), True): "resnet50", ((3, 4, 23, 3), True): "resnet101",
           ((3, 8, 36, 3), True): "resnet152"}


def torch_name(path: FlaxPath) -> str:
    """`('params', 'layer2_0', 'downsample_1', 'scale')` -> `'layer2.0.downsample.1.weight'`."""
    collection, *modules, leaf = path
    return ".".join([re.sub(r"_(\d+)", r".\1", module) for module in modules]
                    + [_TORCH_LEAF[collection, leaf]])


def converted_name(path: FlaxPath) -> str:
    """`('params', 'layer1_0', 'conv1', 'kernel')` -> `'params/layer1_0/conv1/kernel'`."""
    return "/".join(path)


def is_converted(names: Any) -> bool:
    """Whether names are cnnjax's flattened Flax paths rather than torch state-dict keys."""
    return any(name.split("/", 1)[0] in COLLECTIONS and "/" in name for name in names)


def flatten_variables(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Nested variables -> {'params/conv1/kernel': array, 'batch_stats/bn1/mean': ...}."""
    return {converted_name(path): np.asarray(value)
            for path, value in _flat_paths(variables).items()}


def unflatten_variables(flat: Mapping[FlaxPath, Any]) -> Variables:
    nested: Variables = {}
    for path, value in flat.items():
        node = nested
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return nested


def guess_arch(names: Any) -> str | None:
    """torchvision's name for the ResNet whose state-dict (or converted) keys these are."""
    blocks: dict[int, set[int]] = {}
    bottleneck = False
    for name in names:
        match = re.search(r"layer(\d)[._](\d+)[./](\w+)", name)
        if match:
            blocks.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
            bottleneck |= match.group(3) in ("conv3", "bn3")
    sizes = tuple(len(blocks.get(stage, ())) for stage in (1, 2, 3, 4))
    return _SHAPES.get((sizes, bottleneck))


def load_torchvision(source: Source, arch: str, *, num_classes: int | None = None,
                     in_channels: int = 3, seed: int = 0) -> Variables:
    """`{'params', 'batch_stats'}` for `cnnjax.models.<arch>` from torchvision/timm weights.

    `source`: a `.pth`/`.pt`/`.safetensors`/`.npz` path, `'torchvision:<arch>'` (found or
    downloaded by `resolve_weights`), a mapping name -> numpy array or torch tensor, or a
    file written by `convert`. `num_classes`: None or the file's keeps the file's classifier;
    another value gives a fresh `fc` initialised exactly as `model.init(PRNGKey(seed), ...)`
    would. `in_channels` other than the file's 3 adapts the stem: summed over RGB for 1
    (fastai's choice), else tiled and rescaled (timm's). Missing, unexpected and misshapen
    entries all end in one `WeightsError`; only `num_batches_tracked` is ignored.
    """
    arrays, origin = _read_source(source)
    return port(arrays, arch, num_classes=num_classes, in_channels=in_channels, seed=seed,
                origin=origin)


def load_converted(path: str | os.PathLike, arch: str | None = None, *,
                   num_classes: int | None = None, in_channels: int | None = None,
                   seed: int = 0) -> Variables:
    """Variables from a file written by `convert`; arch and input channels default to the
    ones recorded in it. Needs no torch."""
    weights = read_weights(path)
    metadata = weights.metadata
    if metadata.get("format") != CONVERTED_FORMAT and not is_converted(weights.arrays):
        raise WeightsError(f"{path} is not a file written by `python -m cnnjax.pretrained "
                           f"convert`; load it with load_torchvision instead.")
    arch = arch or metadata.get("arch") or guess_arch(weights.arrays)
    if in_channels is None:
        in_channels = int(metadata.get("in_channels", 3))
    return port(weights.arrays, arch, num_classes=num_classes, in_channels=in_channels,
                seed=seed, origin=str(path))


def convert(source: Source, out: str | os.PathLike, arch: str | None = None, *,
            num_classes: int | None = None, in_channels: int = 3) -> str:
    """Writes `source`'s weights as cnnjax's converted `.safetensors` file and returns `arch`.

    The file holds the flattened Flax tree (`params/layer1_0/conv1/kernel` in HWIO,
    `batch_stats/bn1/mean`, ...) with metadata `format`, `arch`, `num_classes`,
    `in_channels`, `source`; `load_converted` (or `load_torchvision`) reads it without torch.
    """
    if not str(out).endswith(".safetensors"):
        raise WeightsError(f"The converted file {out} must end in .safetensors.")
    arrays, origin = _read_source(source)
    arch = arch or guess_arch(_strip_module_prefix(arrays))
    if arch is None:
        raise WeightsError(f"Could not tell which ResNet {origin} holds; pass --arch "
                           f"(one of {', '.join(ARCHS)}).")
    variables = port(arrays, arch, num_classes=num_classes, in_channels=in_channels,
                     origin=origin)
    flat = flatten_variables(variables)
    metadata = {"format": CONVERTED_FORMAT, "arch": arch,
                "num_classes": str(flat["params/fc/bias"].shape[0]),
                "in_channels": str(flat[converted_name(_STEM)].shape[2]),
                "source": os.path.basename(origin)}
    write_safetensors(out, flat, metadata)
    return arch


def port(arrays: Mapping[str, Any], arch: str, *, num_classes: int | None = None,
         in_channels: int = 3, seed: int = 0, origin: str = "the given weights") -> Variables:
    """Maps named arrays (torch names or converted names) onto `arch`'s variable tree."""
    if arch not in ARCHS:
        raise WeightsError(f"Pretrained weights are ported for {', '.join(ARCHS)}, not "
                           f"{arch!r}.")
    arrays = _strip_module_prefix({name: to_numpy(value) for name, value in arrays.items()})
    converted = is_converted(arrays)
    name_of = converted_name if converted else torch_name
    file_classes = _file_num_classes(arrays, converted)
    fresh_head = num_classes is not None and num_classes != file_classes
    model = getattr(models, arch)(num_classes=num_classes or file_classes or 1000,
                                  in_channels=in_channels)
    dummy = jnp.zeros((1, 32, 32, in_channels), jnp.float32)
    template = _flat_paths(jax.eval_shape(model.init, jax.random.PRNGKey(seed), dummy))

    loaded: dict[FlaxPath, np.ndarray] = {}
    missing, wrong_shape, used = [], [], set()
    for path, spec in template.items():
        if path[0] not in COLLECTIONS:
            continue
        name = name_of(path)
        if fresh_head and path[:2] == _HEAD:
            used.add(name)
            continue
        if name not in arrays:
            missing.append(f"{name} {_source_shape(spec.shape, converted)}")
            continue
        used.add(name)
        value = arrays[name] if converted else _to_flax_layout(arrays[name])
        if path == _STEM:
            value = adapt_stem(value, in_channels)
        if value.shape != tuple(spec.shape):
            wrong_shape.append(f"{name}: file {tuple(arrays[name].shape)}, model "
                               f"{_source_shape(spec.shape, converted)}")
            continue
        loaded[path] = value.astype(spec.dtype)
    unexpected = [f"{name} {tuple(value.shape)}" for name, value in arrays.items()
                  if name not in used and not name.endswith("num_batches_tracked")]
    if missing or unexpected or wrong_shape:
        raise WeightsError(_misfit_message(origin, arch, guess_arch(arrays), missing,
                                           unexpected, wrong_shape))
    if fresh_head:
        features = template[_HEAD + ("kernel",)].shape[0]
        head = _Head(model.num_classes).init(jax.random.PRNGKey(seed),
                                             jnp.zeros((1, features)))["params"]["fc"]
        loaded.update({_HEAD + (leaf,): value for leaf, value in head.items()})
    return unflatten_variables({path: jnp.asarray(value) for path, value in loaded.items()})


class _Head(nn.Module):
    """Just the ResNet's `fc`, at the same place in the tree: Flax derives each module's init
    key from the seed and its path, so this gives the fc that `model.init` would, without
    paying for initialising (and then discarding) the whole network."""
    num_classes: int

    @nn.compact
    def __call__(self, features: jnp.ndarray) -> jnp.ndarray:
        return torch_dense(self.num_classes, name="fc")(features)


def adapt_stem(kernel: np.ndarray, in_channels: int) -> np.ndarray:
    """An RGB stem kernel (HWIO) for `in_channels` inputs: summed over RGB for one channel
    (a grey image then gives what the RGB model gives on that image in all three channels);
    for other counts tiled and scaled by 3 / in_channels, as timm does."""
    have = kernel.shape[2]
    if have == in_channels or have != 3:
        return kernel  # nothing to adapt, or a mismatch the shape check reports
    if in_channels == 1:
        return kernel.sum(axis=2, keepdims=True)
    tiled = np.tile(kernel, (1, 1, math.ceil(in_channels / 3), 1))[:, :, :in_channels]
    return tiled * (3.0 / in_channels)


def _read_source(source: Source) -> tuple[dict[str, Any], str]:
    if isinstance(source, Mapping):
        return dict(source), "the given state dict"
    from cnnjax.pretrained.locate import resolve_weights

    path = resolve_weights(source)
    return read_weights(path).arrays, str(path)


def _strip_module_prefix(arrays: dict[str, Any]) -> dict[str, Any]:
    """Drops the `module.` that DataParallel/DistributedDataParallel put before every key."""
    if arrays and all(name.startswith("module.") for name in arrays):
        return {name[len("module."):]: value for name, value in arrays.items()}
    return arrays


def _file_num_classes(arrays: Mapping[str, np.ndarray], converted: bool) -> int | None:
    if converted:
        kernel = arrays.get("params/fc/kernel")
        return None if kernel is None or kernel.ndim != 2 else int(kernel.shape[1])
    weight = arrays.get("fc.weight")
    return None if weight is None or weight.ndim != 2 else int(weight.shape[0])


def _to_flax_layout(array: np.ndarray) -> np.ndarray:
    """Conv OIHW -> HWIO; linear (out, in) -> (in, out); vectors unchanged."""
    if array.ndim == 4:
        return array.transpose(2, 3, 1, 0)
    if array.ndim == 2:
        return array.T
    return array


def _source_shape(flax_shape: tuple[int, ...], converted: bool) -> tuple[int, ...]:
    """A Flax shape written as the file would hold it (torch layout unless converted)."""
    shape = tuple(flax_shape)
    if converted:
        return shape
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    return shape[::-1] if len(shape) == 2 else shape


def _misfit_message(origin: str, arch: str, looks_like: str | None, missing: list[str],
                    unexpected: list[str], wrong_shape: list[str]) -> str:
    hint = (f" (it looks like {looks_like}; pass arch={looks_like!r})"
            if looks_like and looks_like != arch else "")
    counts = ", ".join(f"{len(items)} {what}" for what, items in
                       (("missing", missing), ("unexpected", unexpected),
                        ("with the wrong shape", wrong_shape)) if items)
    missing, unexpected, wrong_shape = (sorted(items, key=_natural_key)
                                        for items in (missing, unexpected, wrong_shape))
    lines = [f"{origin} does not fit cnnjax's {arch}{hint}: {counts} "
             f"(shapes as the file stores them)."]
    for title, items in (("missing", missing), ("unexpected", unexpected),
                         ("wrong shape", wrong_shape)):
        if items:
            lines.append(f"  {title}: " + "; ".join(items))
    return "\n".join(lines)


def _natural_key(text: str) -> list[Any]:
    """Sorts 'layer1.2.conv1' before 'layer1.10.conv1'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _flat_paths(tree: Mapping[str, Any], prefix: FlaxPath = ()) -> dict[FlaxPath, Any]:
    flat: dict[FlaxPath, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flat_paths(value, prefix + (key,)))
        else:
            flat[prefix + (key,)] = value
    return flat
