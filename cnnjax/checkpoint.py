"""Saving and restoring the train state with orbax (`CheckpointManager` + `ocp.args`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from cnnjax.train.state import TrainState

_SAVED_FIELDS = ("step", "params", "batch_stats", "opt_state", "rng")


def _arrays(state: TrainState) -> dict[str, Any]:
    return {name: getattr(state, name) for name in _SAVED_FIELDS}


class Checkpoints:
    """The checkpoints of one workdir, indexed by train step; keeps the newest `max_to_keep`."""

    def __init__(self, directory: str | Path, max_to_keep: int = 2):
        self.manager = ocp.CheckpointManager(
            Path(directory).absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, state: TrainState) -> None:
        """Saves in the background; `wait` or `close` before reading it back."""
        self.manager.save(int(state.step), args=ocp.args.StandardSave(_arrays(state)))

    def restore(self, state: TrainState, step: int | None = None) -> TrainState:
        """`state` with its arrays replaced by checkpoint `step` (default: the newest)."""
        step = self.latest_step() if step is None else step
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _arrays(state))
        restored = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        return state.replace(**restored)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
