"""Checkpoints of a run with orbax (`CheckpointManager` + `ocp.args`): the train state's arrays
and a JSON record of everything else needed to continue exactly (epoch, the data iterator's
state, the partial epoch's sums, the metrics history, the config).

Saves are asynchronous: `save` returns once the arrays are copied off the device, and the
disk write finishes in the background. The newest `max_to_keep` checkpoints are kept, and the
best one by `best_metric` as well. Restoring walks back from the newest checkpoint past any
that cannot be read, naming each one it skips.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from cnnjax.errors import CnnjaxError
from cnnjax.train.state import TrainState

STATE_FIELDS = ("step", "params", "batch_stats", "opt_state", "rng")


class CheckpointError(CnnjaxError):
    """Checkpoints exist but none can be restored, or a state is not fit to save."""


def state_arrays(state: TrainState) -> dict[str, Any]:
    return {name: getattr(state, name) for name in STATE_FIELDS}


def is_finite(tree: Any) -> bool:
    """True when every floating-point leaf of `tree` is free of NaN and Inf."""
    leaves = [x for x in jax.tree.leaves(tree) if jax.numpy.issubdtype(x.dtype,
                                                                        jax.numpy.floating)]
    return bool(jax.jit(lambda xs: jax.numpy.all(jax.numpy.stack(
        [jax.numpy.isfinite(x).all() for x in xs])))(leaves)) if leaves else True


class Checkpoints:
    """The checkpoints of one workdir, indexed by train step."""

    def __init__(self, directory: str | Path, *, max_to_keep: int = 2,
                 best_metric: str = "", best_mode: str = "max", asynchronous: bool = True):
        policies: list[Any] = [ocp.checkpoint_managers.LatestN(n=max_to_keep)]
        if best_metric:
            policies.append(ocp.checkpoint_managers.BestN(
                get_metric_fn=lambda metrics: metrics[best_metric], reverse=best_mode == "min",
                n=1, keep_checkpoints_without_metrics=False))
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory, item_names=("state", "extra"),
            options=ocp.CheckpointManagerOptions(
                create=True, enable_async_checkpointing=asynchronous,
                preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies)))

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, state: TrainState, extra: dict[str, Any],
             metrics: dict[str, float] | None = None) -> None:
        """Saves `state` and the JSON-able `extra` at `state.step`. Refuses a state with NaN
        or Inf. Returns once the arrays are copied; `wait` for the disk."""
        step = int(state.step)
        if not is_finite({"params": state.params, "batch_stats": state.batch_stats}):
            raise CheckpointError(f"the parameters at step {step} hold NaN or Inf; not saved.")
        if step in self.manager.all_steps():
            return
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state_arrays(state)), extra=ocp.args.JsonSave(extra)),
            metrics=metrics)

    def restore(self, state: TrainState, step: int) -> tuple[TrainState, dict[str, Any]]:
        """`state` with its arrays replaced by those of checkpoint `step`, and its `extra`."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_arrays(state))
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), extra=ocp.args.JsonRestore()))
        return state.replace(**restored["state"]), dict(restored["extra"])

    def restore_newest_good(self, state: TrainState, warn: Callable[[str], None]
                            ) -> tuple[TrainState, dict[str, Any], int] | None:
        """The newest checkpoint that restores, skipping unreadable ones with a warning; None
        when there are none. Raises CheckpointError when there are some but none restores."""
        steps = self.all_steps()
        failures = []
        for step in reversed(steps):
            try:
                restored, extra = self.restore(state, step)
            except Exception as error:  # any unreadable checkpoint: try the next older one
                reason = " ".join(str(error).split())[:200] or type(error).__name__
                failures.append(f"step {step} ({reason})")
                warn(f"skipping the unreadable checkpoint at step {step}: {reason}")
                continue
            return restored, extra, step
        if failures:
            raise CheckpointError(
                f"{self.directory} holds checkpoints but none can be restored: "
                f"{'; '.join(failures)}. Move them away to start afresh, or point --workdir "
                f"elsewhere.")
        return None

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def load_weights(path: str | Path, state: TrainState) -> TrainState:
    """`state` with params and batch_stats from a workdir (its newest checkpoint) or a
    checkpoint folder (`<workdir>/checkpoints/<step>`); optimizer state and step stay fresh."""
    path = Path(path).expanduser().absolute()
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    if path.name.isdigit() and (path / "state").is_dir():
        item = path / "state"
    else:
        steps = sorted(int(p.name) for p in path.glob("*") if p.name.isdigit()) \
            if path.is_dir() else []
        if not steps:
            raise CheckpointError(f"{path} is neither a workdir with checkpoints nor a "
                                  f"checkpoint; config.init_from names one of those.")
        item = path / str(steps[-1]) / "state"
    target = {"params": state.params, "batch_stats": state.batch_stats}
    with ocp.StandardCheckpointer() as checkpointer:
        saved = checkpointer.restore(item)
    for name, wanted in target.items():
        if jax.tree.map(np.shape, wanted) != jax.tree.map(np.shape, saved.get(name, {})):
            raise CheckpointError(f"{item}: its {name} do not fit this model (names or shapes "
                                  f"differ); config.init_from needs a run of the same "
                                  f"architecture and number of classes.")
    return state.replace(params=jax.tree.map(jax.numpy.asarray, saved["params"]),
                         batch_stats=jax.tree.map(jax.numpy.asarray, saved["batch_stats"]))
