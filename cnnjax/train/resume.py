"""What may change between a run and its resumption: fields that change the shape or meaning
of the saved state stop the run with the field named; the rest are recorded and go on."""

from __future__ import annotations

import json
from typing import Any

from cnnjax.configs import base
from cnnjax.errors import ConfigError
from cnnjax.train.warm_start import INPUT_FIELDS

# Changing these changes the parameters' shapes or meaning, the optimizer state's layout, the
# inputs the network learnt, which recordings validate (a new split would validate on
# recordings the saved state has trained on), or how the saved position within an epoch reads
# (each input path and sampling keeps its own).
SPLIT_FIELDS = ("data.val_fraction", "data.split_seed", "data.grouped", "data.num_folds",
                "data.fold", "data.val_groups")
STATE_FIELDS = ("model", "data.name", "data.subset", "data.manual_dir", "data.csv",
                "data.synthetic", "data.synthetic_images", "data.classes", "optimizer.name",
                "loss.name", "augment.on_device", "data.sampling", *INPUT_FIELDS, *SPLIT_FIELDS)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: tree}


def config_changes(saved_json: str, config: Any) -> dict[str, tuple[Any, Any]]:
    """`{field: (saved value, new value)}` for every field that differs. A field the saved
    config lacks (added to cnnjax after it was written) is unchanged while it holds the base
    config's default, the behaviour of the code that wrote it."""
    saved, current, defaults = (_flatten(json.loads(text)) for text in (
        saved_json, config.to_json(), base.get_config().to_json()))
    return {field: (saved.get(field), current.get(field))
            for field in sorted(set(saved) | set(current))
            if saved.get(field) != current.get(field)
            and not (field not in saved and field in defaults
                     and current.get(field) == defaults[field])}


def check_resumable(changes: dict[str, tuple[Any, Any]]) -> None:
    """Raises ConfigError naming every changed field that the saved state cannot follow."""
    fixed = [(field, before, after) for field, (before, after) in changes.items()
             if any(field == f or field.startswith(f + ".") for f in STATE_FIELDS)]
    if fixed:
        what = "; ".join(f"config.{field} was {before!r} when this workdir's checkpoints were "
                         f"written and is {after!r} now" for field, before, after in fixed)
        raise ConfigError(
            f"{what}; resuming cannot change {'it' if len(fixed) == 1 else 'them'}. Use "
            f"another --workdir, or --config.init_from=<this workdir> to start a new run from "
            f"its weights.")


def check_classes(saved_classes: list[str], classes: tuple[str, ...]) -> None:
    """Raises ConfigError when the data's classes are not those the checkpoints learnt."""
    if list(classes) != list(saved_classes):
        raise ConfigError(f"the data's classes are {list(classes)} but this workdir's "
                          f"checkpoints were trained on {saved_classes}; resuming cannot "
                          f"change them. Use another --workdir.")
