"""Parameters by name: which are frozen, and fastai's learning-rate groups of a ResNet.

A parameter's path is its Flax path joined by '/': 'conv1/kernel', 'layer2_0/downsample_1/bias',
'fc/kernel'. A pattern is an alias below or a regex matched (`re.match`) at the start of the
path, so 'layer1' selects every parameter of stage 1.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

import jax

ALIASES = {
    "stem": r"(conv1|bn1)/",
    "head": r"(fc|head)(/|_)",  # torchvision's `fc`, or a module (or prefix) named `head`
    "body": r"(?!(fc|head)(/|_))",
}
LR_GROUPS = ("early", "late", "head")  # fastai's split of a ResNet, lowest rate first
_EARLY = re.compile(r"(conv1|bn1|layer[12]_\d+)/")
_LATE = re.compile(r"layer[34]_\d+/")
_STAGE = re.compile(r"layer\d+_\d+/")


def param_paths(tree: Any) -> Any:
    """`tree` with every leaf replaced by its '/'-joined path."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: jax.tree_util.keystr(path, simple=True, separator="/"), tree)


def matches(path: str, patterns: Iterable[str]) -> bool:
    return any(re.match(ALIASES.get(p, p), path) for p in patterns)


def frozen_mask(params: Any, patterns: Iterable[str]) -> Any:
    """A tree of Python bools (True: frozen), static so that frozen leaves are resolved when
    tracing rather than masked at run time."""
    patterns = tuple(patterns)
    return jax.tree.map(lambda path: matches(path, patterns), param_paths(params))


def unmatched_patterns(params: Any, patterns: Iterable[str]) -> list[str]:
    """The patterns that select no parameter of `params`: most likely typos."""
    paths = jax.tree.leaves(param_paths(params))
    return [p for p in patterns if not any(matches(path, (p,)) for path in paths)]


def lr_group_labels(params: Any) -> Any:
    """'early' (stem, layer1, layer2), 'late' (layer3, layer4) or 'head' (the rest) per leaf,
    as fastai splits a ResNet. A model without ResNet stages (SimpleCNN) is all 'head', so it
    trains at the top rate."""
    paths = param_paths(params)
    if not any(_STAGE.match(path) for path in jax.tree.leaves(paths)):
        return jax.tree.map(lambda _: "head", paths)
    return jax.tree.map(
        lambda path: "early" if _EARLY.match(path) else "late" if _LATE.match(path) else "head",
        paths)
