"""What may change between a run and its resumption: fields that change the shape or meaning
of the saved state stop the run with the field named; the rest are recorded and go on."""

from __future__ import annotations

import json
from typing import Any

from cnnjax.errors import ConfigError
from cnnjax.train.losses import DEFAULT_LOSS

# Changing these changes the parameters' shapes or meaning, or the optimizer state's layout.
STATE_FIELDS = ("model", "data.name", "data.subset", "data.manual_dir", "data.csv",
                "data.classes", "data.channels", "data.image_size", "optimizer.name",
                "loss.name")
# Fields added after runs were saved: a config without one ran with this value.
ADDED_FIELDS = {"loss.name": DEFAULT_LOSS}


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: tree}


def config_changes(saved_json: str, config: Any) -> dict[str, tuple[Any, Any]]:
    """`{field: (saved value, new value)}` for every field that differs."""
    saved, current = ({**ADDED_FIELDS, **_flatten(json.loads(text))}
                      for text in (saved_json, config.to_json()))
    return {field: (saved.get(field), current.get(field))
            for field in sorted(set(saved) | set(current))
            if saved.get(field) != current.get(field)}


def check_resumable(changes: dict[str, tuple[Any, Any]], saved_classes: list[str],
                    classes: tuple[str, ...]) -> None:
    """Raises ConfigError naming the first change that the saved state cannot follow."""
    for field, (before, after) in changes.items():
        if any(field == f or field.startswith(f + ".") for f in STATE_FIELDS):
            raise ConfigError(
                f"config.{field} was {before!r} when this workdir's checkpoints were written and "
                f"is {after!r} now; resuming cannot change it. Use another --workdir, or "
                f"--config.init_from=<this workdir> to start a new run from its weights.")
    if list(classes) != list(saved_classes):
        raise ConfigError(f"the data's classes are {list(classes)} but the checkpoints were "
                          f"trained on {saved_classes}; use another --workdir.")
