"""Checkpoints of a run with orbax (`CheckpointManager` + `ocp.args`): the train state's arrays
and a JSON record of everything else needed to continue exactly (epoch, the data iterator's
state, the partial epoch's sums, the metrics history, the config).

Saves are asynchronous: `save` returns once the arrays are copied off the device, and the
disk write finishes in the background. The newest `max_to_keep` checkpoints are kept, and the
best one by `best_metric` as well. Restoring walks back from the newest checkpoint past any
that cannot be read, naming each one it skips.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import numpy as np
import orbax.checkpoint as ocp

from cnnjax.errors import WRITE_FIXES, CnnjaxError
from cnnjax.train.state import TrainState

STATE_FIELDS = ("step", "params", "batch_stats", "opt_state", "rng")
COMMIT_MARKER = "commit_success.txt"  # orbax writes it last; without it a save did not finish


@contextlib.contextmanager
def _quiet_asyncio() -> Iterator[None]:
    """A failed restore leaves orbax's other reads failing too, each logged by asyncio as a
    'Future exception was never retrieved'; the one warning we print says it all."""
    logger = logging.getLogger("asyncio")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class _OrbaxIoNeverRetrieved(logging.Filter):
    """A failed restore or save leaves orbax's other concurrent reads or writes failing too;
    asyncio logs each as 'Task exception was never retrieved' when it is garbage-collected,
    possibly after the run's own error message. Our warning or error has said it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            # A plain OSError names neither; the files it was raised in do.
            message += repr(record.exc_info[1]) + " ".join(
                frame.filename for frame in traceback.extract_tb(record.exc_info[2]))
        return not ("exception was never retrieved" in message
                    and ("orbax" in message or "tensorstore" in message))


def _ignore_io_into_closed_loop() -> None:
    """After a failed restore or save, tensorstore's still-pending reads or writes complete
    into orbax's closed event loop, and each reports a 'RuntimeError: Event loop is closed'
    traceback as an unraisable exception, some before the failure reaches us and some long
    after. They carry nothing; our warning or error says it. Their 'never retrieved' errors
    are filtered from asyncio's log. Installed with the first `Checkpoints`."""
    asyncio_logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _OrbaxIoNeverRetrieved) for f in asyncio_logger.filters):
        asyncio_logger.addFilter(_OrbaxIoNeverRetrieved())
    previous = sys.unraisablehook
    if getattr(previous, "ignores_closed_loop", False):
        return

    def hook(unraisable: Any) -> None:
        if (unraisable.exc_type is RuntimeError
                and str(unraisable.exc_value) == "Event loop is closed"):
            return
        previous(unraisable)

    hook.ignores_closed_loop = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


class _ExpectedOrbaxWarnings(logging.Filter):
    """orbax warns at every save without metrics once a best metric is tracked (saves
    between epochs, every_steps or preemption, never have one, by design), and when a state
    item's own metadata file is absent (the manager keeps it one folder up)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("did not provide metrics" in message
                    or ("Metadata file does not exist" in message
                        and message.rstrip().endswith("_CHECKPOINT_METADATA")))


class _WriteFailuresRaisedAgain(logging.Filter):
    """orbax logs a save that failed for want of permission or space from each of its
    background threads, with tracebacks; the same error comes back from the next save or
    wait, where `Checkpoints` words it in one sentence."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or "orbax" not in record.pathname:
            return True
        return _os_error_code(record.exc_info[1] if record.exc_info else None) \
            not in WRITE_FIXES


logging.getLogger("absl").addFilter(_ExpectedOrbaxWarnings())
logging.getLogger("absl").addFilter(_WriteFailuresRaisedAgain())


def _os_error_code(error: BaseException | None) -> int | None:
    """The errno behind a failed write: an OSError's in the exception's chain, or the
    `os_error_code` tensorstore writes into its messages."""
    while error is not None:
        if isinstance(error, OSError) and error.errno:
            return error.errno
        code = re.search(r"os_error_code='?(\d+)", str(error))
        if code:
            return int(code.group(1))
        error = error.__cause__ or error.__context__
    return None


class CheckpointError(CnnjaxError):
    """Checkpoints exist but none can be restored, a state is not fit to save, or the disk
    refuses a save."""


class NonFiniteState(CheckpointError):
    """The state to save holds NaN or Inf."""


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
        _ignore_io_into_closed_loop()
        policies: list[Any] = [ocp.checkpoint_managers.LatestN(n=max_to_keep)]
        if best_metric:
            policies.append(ocp.checkpoint_managers.BestN(
                get_metric_fn=lambda metrics: metrics[best_metric], reverse=best_mode == "min",
                n=1, keep_checkpoints_without_metrics=False))
        self.best_metric, self.best_mode = best_metric, best_mode
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory, item_names=("state", "extra"),
            options=ocp.CheckpointManagerOptions(
                create=True, enable_async_checkpointing=asynchronous,
                # With best_fn orbax stores each save's metrics on disk, so a resumed run's
                # manager still knows the best checkpoint instead of deleting it.
                best_fn=(lambda metrics: metrics[best_metric]) if best_metric else None,
                best_mode=best_mode,
                preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies)))

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The step whose epoch-end record is best by `best_metric`; the newest step when no
        best metric is configured or no checkpoint holds one; None when there are none.

        The metric is read from each checkpoint's JSON record (`history[-1]`, when that record
        is of this very step) rather than from orbax: without `best_fn` orbax keeps metrics
        in memory only, so a fresh process would not know them. Ties go to the newer step;
        unreadable records are passed over.
        """
        steps = self.all_steps()
        scored = []
        for step in steps if self.best_metric else ():
            try:
                history = self.read_extra(step).get("history") or [{}]
            except Exception:  # an unreadable checkpoint cannot be the best one
                continue
            record = history[-1]
            if record.get("step") == step and record.get(self.best_metric) is not None:
                scored.append((float(record[self.best_metric]), step))
        if not scored:
            return steps[-1] if steps else None
        sign = -1.0 if self.best_mode == "min" else 1.0
        return max(scored, key=lambda item: (sign * item[0], item[1]))[1]

    def save(self, state: TrainState, extra: dict[str, Any],
             metrics: dict[str, float] | None = None) -> None:
        """Saves `state` and the JSON-able `extra` at `state.step`. Refuses a state with NaN
        or Inf. Returns once the arrays are copied; `wait` for the disk."""
        step = int(state.step)
        if not is_finite({"params": state.params, "batch_stats": state.batch_stats}):
            raise NonFiniteState(f"the parameters at step {step} hold NaN or Inf; not saved.")
        if step in self.manager.all_steps():
            return
        with self._writing():
            self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state_arrays(state)),
                extra=ocp.args.JsonSave(extra)), metrics=metrics)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A save that failed for want of permission or space (this one, or one that failed
        in the background since) becomes one CheckpointError naming the folder and the newest
        checkpoint left; orbax has already dropped the failed one from its steps."""
        try:
            yield
        except Exception as error:
            code = _os_error_code(error)
            if code not in WRITE_FIXES:
                raise
            newest = self.latest_step()
            then = ("to start again" if newest is None
                    else f"to resume from the newest checkpoint, step {newest}")
            raise CheckpointError(
                f"cannot write a checkpoint in {self.directory}: {os.strerror(code)}; "
                f"{WRITE_FIXES[code]} and run the same command again {then}.") from None

    def restore(self, state: TrainState, step: int) -> tuple[TrainState, dict[str, Any]]:
        """`state` with its arrays replaced by those of checkpoint `step`, and its `extra`."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_arrays(state))
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), extra=ocp.args.JsonRestore()))
        return state.replace(**restored["state"]), dict(restored["extra"])

    def read_extra(self, step: int) -> dict[str, Any]:
        """The JSON record of checkpoint `step` alone, without reading its arrays."""
        if not (self.directory / str(step) / COMMIT_MARKER).exists():
            raise CheckpointError(f"incomplete: no {COMMIT_MARKER}")
        restored = self.manager.restore(step, args=ocp.args.Composite(
            extra=ocp.args.JsonRestore()))
        return dict(restored["extra"])

    def restore_newest_good(self, state: TrainState, warn: Callable[[str], None],
                            check: Callable[[dict[str, Any]], None] = lambda extra: None
                            ) -> tuple[TrainState, dict[str, Any], int] | None:
        """The newest checkpoint that restores, skipping unreadable ones with a warning; None
        when there are none. `check` sees each checkpoint's JSON record before its arrays are
        read, so that a config the state cannot follow is named rather than failing on shapes.
        Raises CheckpointError when there are checkpoints but none restores."""
        failures = []
        for step in reversed(self.all_steps()):
            try:
                with _quiet_asyncio():
                    extra = self.read_extra(step)
            except Exception as error:  # any unreadable checkpoint: try the next older one
                failures.append(self._skip(step, error, warn))
                continue
            check(extra)
            try:
                with _quiet_asyncio():
                    restored, extra = self.restore(state, step)
            except Exception as error:
                failures.append(self._skip(step, error, warn))
                continue
            return restored, extra, step
        if failures:
            raise CheckpointError(
                f"{self.directory} holds checkpoints but none can be restored: "
                f"{'; '.join(failures)}. Move them away to start afresh, or point --workdir "
                f"elsewhere.")
        return None

    @staticmethod
    def _skip(step: int, error: Exception, warn: Callable[[str], None]) -> str:
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        warn(f"skipping the unreadable checkpoint at step {step}: {reason}")
        return f"step {step} ({reason})"

    def wait(self) -> None:
        with self._writing():
            self.manager.wait_until_finished()

    def close(self) -> None:
        with self._writing():
            self.manager.close()


def read_state_arrays(item: str | Path, names: tuple[str, ...] = ("params", "batch_stats")
                      ) -> dict[str, Any]:
    """Entries `names` of a saved train state (`<step>/state`) as arrays on this process's
    first device, whatever devices wrote them: a run sharded over 8 GPUs or several hosts
    reads back on a laptop. The optimizer state is not read."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    with ocp.StandardCheckpointer() as checkpointer:
        saved = checkpointer.metadata(item).item_metadata
    missing = [name for name in names if name not in saved]
    if missing:
        raise CheckpointError(f"{item} holds no {missing[0]}.")
    target = {name: jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype,
                                                                 sharding=device),
                                 dict(saved[name])) for name in names}
    with ocp.PyTreeCheckpointer() as checkpointer:
        return checkpointer.restore(item, args=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True))


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
    saved = read_state_arrays(item)
    for name, wanted in target.items():
        if jax.tree.map(np.shape, wanted) != jax.tree.map(np.shape, saved.get(name, {})):
            raise CheckpointError(f"{item}: its {name} do not fit this model (names or shapes "
                                  f"differ); config.init_from needs a run of the same "
                                  f"architecture and number of classes.")
    return state.replace(params=jax.tree.map(jax.numpy.asarray, saved["params"]),
                         batch_stats=jax.tree.map(jax.numpy.asarray, saved["batch_stats"]))
