"""`progress_bar(...)`: the one progress bar every long step shows (count, rate, ETA), so
feature computation, evaluation, the lr_find sweep, prediction and export look like the
train loop's bar; only process 0 draws it, so several hosts do not print over each other."""

from __future__ import annotations

import sys

import jax
from tqdm.auto import tqdm


def progress_bar(total: int | None, description: str, unit: str, initial: int = 0,
                 leave: bool = True) -> tqdm:
    """A tqdm bar on stderr counting `unit`s from `initial` towards `total` (None: a count
    and rate only); disabled on every process but 0."""
    return tqdm(total=total, desc=description, unit=unit, initial=initial, leave=leave,
                dynamic_ncols=True, file=sys.stderr, disable=jax.process_index() != 0)
