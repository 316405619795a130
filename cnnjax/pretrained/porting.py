"""torchvision/timm ResNet and torchvision InceptionV3 state dicts -> cnnjax Flax variables,
strictly and exactly.

The mapping is derived from the Flax variable tree itself, not from a hand-written table:
every Flax path has exactly one torch name (`params/layer2_0/downsample_0/kernel` is
`layer2.0.downsample.0.weight`; `params/Mixed_5b/branch5x5_1/conv/kernel` is
`Mixed_5b.branch5x5_1.conv.weight`), so a file fits a model when the two name sets are equal
and every shape agrees. timm's ResNet-18/34/50 use torchvision's names, so their files
load the same way. Converted files (cnnjax's own `.safetensors`, keys like
`params/layer1_0/conv1/kernel`, Flax layouts) are recognised by their keys and load too.
"""

from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from cnnjax import models
from cnnjax.models.inception import MIN_SIZE_AUX, classifier
from cnnjax.models.layers import torch_dense
from cnnjax.pretrained.errors import WeightsError
from cnnjax.pretrained.files import read_weights, to_numpy, write_safetensors

CONVERTED_FORMAT = "cnnjax-flax"  # the `format` entry of a converted file's metadata
COLLECTIONS = ("params", "batch_stats")
FlaxPath = tuple[str, ...]
Variables = dict[str, Any]
Source = str | os.PathLike | Mapping[str, Any]

_TORCH_LEAF = {("params", "kernel"): "weight", ("params", "scale"): "weight",
               ("params", "bias"): "bias", ("batch_stats", "mean"): "running_mean",
               ("batch_stats", "var"): "running_var"}


@dataclass(frozen=True)
class Layout:
    """What porting needs to know of a network beyond its Flax variable tree."""
    stem: FlaxPath  # the first conv's kernel, adapted to the input channels
    # Module path -> its layer (`layer(num_classes, name=...)`), replaced by a fresh one when
    # the class count differs from the file's.
    classifiers: Mapping[tuple[str, ...], Callable[..., nn.Module]]
    indexed: bool  # Flax names `<name>_<n>` are torch's nn.Sequential children `<name>.<n>`
    # Top-level modules a file may hold that the model has only when asked (aux_logits):
    # without it they are left unread on purpose.
    optional: tuple[str, ...] = ()
    template_size: int = 32  # input side the variable tree is traced with (no compute)


_RESNET = Layout(("params", "conv1", "kernel"), {("fc",): torch_dense}, indexed=True)
_INCEPTION = Layout(("params", "Conv2d_1a_3x3", "conv", "kernel"),
                    {("fc",): functools.partial(classifier, stddev=0.1),
                     ("AuxLogits", "fc"): functools.partial(classifier, stddev=0.001)},
                    indexed=False, optional=("AuxLogits",), template_size=MIN_SIZE_AUX)
LAYOUTS = {"resnet18": _RESNET, "resnet34": _RESNET, "resnet50": _RESNET,
           "inception_v3": _INCEPTION}
ARCHS = tuple(LAYOUTS)
# (blocks per stage, bottleneck) -> torchvision's name, to say what a misfit file looks like.
_SHAPES = {((2, 2, 2, 2), False): "resnet18", ((3, 4, 6, 3), False): "resnet34",
           ((3, 4, 6, 3), True): "resnet50", ((3, 4, 23, 3), True): "resnet101",
           ((3, 8, 36, 3), True): "resnet152"}


def torch_name(path: FlaxPath, indexed: bool = True) -> str:
    """`('params', 'layer2_0', 'downsample_1', 'scale')` -> `'layer2.0.downsample.1.weight'`.

    `indexed` (ResNet): Flax cannot name a module `layer2.0`, so `_<n>` stands for torch's
    `.<n>`. InceptionV3 has no such children and names like `branch5x5_1` are torch's own,
    so its names are kept as they are (`indexed=False`).
    """
    collection, *modules, leaf = path
    if indexed:
        modules = [re.sub(r"_(\d+)", r".\1", module) for module in modules]
    return ".".join([*modules, _TORCH_LEAF[collection, leaf]])


def converted_name(path: FlaxPath) -> str:
    """`('params', 'layer1_0', 'conv1', 'kernel')` -> `'params/layer1_0/conv1/kernel'`."""
    return "/".join(path)


def is_converted(names: Any) -> bool:
    """Whether names are cnnjax's flattened Flax paths rather than torch state-dict keys."""
    return any(name.split("/", 1)[0] in COLLECTIONS and "/" in name for name in names)


def flatten_variables(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Nested variables -> {'params/conv1/kernel': array, 'batch_stats/bn1/mean': ...}."""
    return {name: np.asarray(value)
            for name, value in traverse_util.flatten_dict(variables, sep="/").items()}


def guess_arch(names: Any) -> str | None:
    """torchvision's name for the network whose state-dict (or converted) keys these are."""
    names = list(names)
    if any("Mixed_7c" in name for name in names):
        return "inception_v3"
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
                     in_channels: int = 3, seed: int = 0, features_at: str = "",
                     aux_logits: bool = False) -> Variables:
    """`{'params', 'batch_stats'}` for `cnnjax.models.<arch>` from torchvision/timm weights.

    `source`: a `.pth`/`.pt`/`.safetensors`/`.npz` path, `'torchvision:<arch>'` (found or
    downloaded by `resolve_weights`), a mapping name -> numpy array or torch tensor, or a
    file written by `convert`. `num_classes`: None or the file's keeps the file's classifier;
    another value gives a fresh `fc` initialised exactly as `model.init(PRNGKey(seed), ...)`
    would. `in_channels` other than the file's 3 adapts the stem: summed over RGB for 1
    (fastai's choice), else tiled and rescaled (timm's). Missing, unexpected and misshapen
    entries all end in one `WeightsError`; only `num_batches_tracked` is ignored, and
    InceptionV3's `AuxLogits.*` unless `aux_logits=True` asks for a model that has them
    (torchvision's ImageNet file holds them; cnnjax's losses do not use them).

    `features_at` (e.g. 'Mixed_6e', 'layer3') gives the variables of the model cut after
    that block, for a model with its own head: the file is still checked against the
    whole network, then the modules after the cut (`modules_after`) are left out.
    """
    arrays, origin = _read_source(source)
    return port(arrays, arch, num_classes=num_classes, in_channels=in_channels, seed=seed,
                features_at=features_at, aux_logits=aux_logits, origin=origin)


def modules_after(arch: str, features_at: str) -> list[str]:
    """The top-level modules of the whole `arch` that a model cut at `features_at` lacks:
    `['Mixed_7a', 'Mixed_7b', 'Mixed_7c', 'fc']` for InceptionV3 at 'Mixed_6e'."""
    if not features_at:
        return []
    whole = _variable_shapes(arch, 1000, 3, False, "")
    cut = _variable_shapes(arch, 1000, 3, False, features_at)
    kept = {path[1] for path in cut}
    return list(dict.fromkeys(path[1] for path in whole if path[1] not in kept))


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
    InceptionV3's `AuxLogits` are not written (see `load_torchvision`).
    """
    arrays, origin = _read_source(source)
    arch = arch or guess_arch(_strip_module_prefix(arrays))
    if arch is None:
        raise WeightsError(f"Could not tell which network {origin} holds; pass --arch "
                           f"(one of {', '.join(ARCHS)}).")
    variables = port(arrays, arch, num_classes=num_classes, in_channels=in_channels,
                     origin=origin)
    write_converted(out, variables, arch, {"source": os.path.basename(origin)})
    return arch


def write_converted(out: str | os.PathLike, variables: Mapping[str, Any], arch: str,
                    metadata: Mapping[str, str]) -> None:
    """Writes `variables` of `arch` (the whole network, or its body without `fc`) as a
    converted `.safetensors` file that `load_torchvision` and `load_converted` read: the
    flattened Flax tree and metadata `format`, `arch`, `num_classes` ('' for a body),
    `in_channels`, plus `metadata`. The tree is checked against `arch` first, so a file that
    cannot be loaded back is never written."""
    if not str(out).endswith(".safetensors"):
        raise WeightsError(f"The converted file {out} must end in .safetensors.")
    flat = flatten_variables(variables)
    in_channels = flat[converted_name(LAYOUTS[arch].stem)].shape[2]
    fc_bias = flat.get("params/fc/bias")
    num_classes = None if fc_bias is None else int(fc_bias.shape[0])
    port(flat, arch, num_classes=num_classes or 1000, in_channels=in_channels,
         origin=f"the variables written to {out}")
    write_safetensors(out, flat, {**metadata, "format": CONVERTED_FORMAT, "arch": arch,
                                  "num_classes": "" if num_classes is None else str(num_classes),
                                  "in_channels": str(in_channels)})


def port(arrays: Mapping[str, Any], arch: str, *, num_classes: int | None = None,
         in_channels: int = 3, seed: int = 0, features_at: str = "", aux_logits: bool = False,
         origin: str = "the given weights") -> Variables:
    """Maps named arrays (torch names or converted names) onto `arch`'s variable tree."""
    if arch not in LAYOUTS:
        raise WeightsError(f"Pretrained weights are ported for {', '.join(ARCHS)}, not "
                           f"{arch!r}.")
    layout = LAYOUTS[arch]
    if aux_logits and "AuxLogits" not in layout.optional:
        raise WeightsError(f"aux_logits=True asks for InceptionV3's auxiliary classifier, "
                           f"which {arch} does not have; leave it False.")
    arrays = _strip_module_prefix({name: to_numpy(value) for name, value in arrays.items()})
    converted = is_converted(arrays)
    name_of = converted_name if converted else functools.partial(torch_name,
                                                                 indexed=layout.indexed)
    file_classes = _file_num_classes(arrays, converted)
    fresh_head = num_classes is not None and num_classes != file_classes
    classes = num_classes or file_classes or 1000
    template = _variable_shapes(arch, classes, in_channels, aux_logits, "")

    loaded: dict[FlaxPath, np.ndarray] = {}
    missing, wrong_shape, used = [], [], set()
    for path, spec in template.items():
        name = name_of(path)
        if fresh_head and path[1:-1] in layout.classifiers:
            used.add(name)
            continue
        if name not in arrays:
            missing.append(f"{name} {_source_shape(spec.shape, converted)}")
            continue
        used.add(name)
        value = arrays[name] if converted else _to_flax_layout(arrays[name])
        if path == layout.stem:
            value = adapt_stem(value, in_channels)
        if value.shape != tuple(spec.shape):
            wrong_shape.append(f"{name}: file {tuple(arrays[name].shape)}, model "
                               f"{_source_shape(spec.shape, converted)}")
            continue
        loaded[path] = value.astype(spec.dtype)
    unexpected = [f"{name} {tuple(value.shape)}" for name, value in arrays.items()
                  if name not in used and not name.endswith("num_batches_tracked")
                  and _top_module(name, converted) not in layout.optional]
    if missing or unexpected or wrong_shape:
        raise WeightsError(_misfit_message(origin, arch, guess_arch(arrays), missing,
                                           unexpected, wrong_shape))
    cut_off = set(modules_after(arch, features_at))
    kept = {path: spec for path, spec in template.items() if path[1] not in cut_off}
    if fresh_head:
        loaded.update(_fresh_classifiers(layout, kept, classes, seed))
    return traverse_util.unflatten_dict({path: jnp.asarray(value)
                                         for path, value in loaded.items() if path in kept})


@functools.lru_cache(maxsize=16)
def _variable_shapes(arch: str, num_classes: int, in_channels: int, aux_logits: bool,
                     features_at: str) -> dict[FlaxPath, jax.ShapeDtypeStruct]:
    """Every params/batch_stats path of the model and its shape, traced without computing
    (cached: tracing InceptionV3 takes about a second). Callers must not change the dict."""
    layout = LAYOUTS[arch]
    fields: dict[str, Any] = {"aux_logits": True} if aux_logits else {}
    if features_at:
        fields.update(features_at=features_at, head="none")
    model = getattr(models, arch)(num_classes=num_classes, in_channels=in_channels, **fields)
    dummy = jnp.zeros((1, layout.template_size, layout.template_size, in_channels))
    shapes = traverse_util.flatten_dict(jax.eval_shape(model.init, jax.random.PRNGKey(0), dummy))
    return {path: spec for path, spec in shapes.items() if path[0] in COLLECTIONS}


def _fresh_classifiers(layout: Layout, template: Mapping[FlaxPath, Any], num_classes: int,
                       seed: int) -> dict[FlaxPath, jax.Array]:
    """The model's classifiers for `num_classes`, exactly as `model.init(PRNGKey(seed))`
    draws them, without initialising (and then discarding) the whole network."""
    layers = tuple((path, layer) for path, layer in layout.classifiers.items()
                   if ("params", *path, "kernel") in template)
    if not layers:  # all of them after a cut
        return {}
    inputs = tuple(jnp.zeros((1, template[("params", *path, "kernel")].shape[0]))
                   for path, _ in layers)
    fresh = _Classifiers(layers, num_classes).init(jax.random.PRNGKey(seed), inputs)
    return {("params", *path): value
            for path, value in traverse_util.flatten_dict(fresh["params"]).items()}


class _Classifiers(nn.Module):
    """Just the classifier layers, each at its path in the model's tree: Flax derives a
    module's init key from the seed and its path alone, so these are the layers that
    `model.init` would give."""
    layers: tuple[tuple[tuple[str, ...], Callable[..., nn.Module]], ...]
    num_classes: int

    @nn.compact
    def __call__(self, inputs: tuple[jnp.ndarray, ...]) -> tuple[jnp.ndarray, ...]:
        return tuple(_place(path, layer, self.num_classes)(x)
                     for (path, layer), x in zip(self.layers, inputs))


class _Scope(nn.Module):
    """An otherwise empty module that holds the rest of a classifier's path."""
    rest: tuple[str, ...]
    layer: Callable[..., nn.Module]
    num_classes: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return _place(self.rest, self.layer, self.num_classes)(x)


def _place(path: tuple[str, ...], layer: Callable[..., nn.Module],
           num_classes: int) -> nn.Module:
    """The module named `path[0]` in the module being built: the layer, or a scope on the
    way to it."""
    if len(path) == 1:
        return layer(num_classes, name=path[0])
    return _Scope(path[1:], layer, num_classes, name=path[0])


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


def _top_module(name: str, converted: bool) -> str:
    """'AuxLogits' for `AuxLogits.fc.weight` or `params/AuxLogits/fc/kernel`."""
    return name.split("/")[1] if converted else name.split(".")[0]


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
    hint = (f" (it looks like {looks_like}; load it with arch={looks_like!r}, in a run "
            f"config.model.name={looks_like!r})"
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
