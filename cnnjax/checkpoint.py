"""Checkpoints of a run with orbax (`CheckpointManager` + `ocp.args`): the train state's arrays
and a JSON record of everything else needed to continue exactly (epoch, the data iterator's
state, the partial epoch's sums, the metrics history, the config).

The one way to read them:
- `Checkpoints(directory, ...)`: `save`, `wait`, `close`; `restore_latest` (resuming),
  `restore_best` (evaluation), `best_variables` (prediction, export: the model's variables
  alone), `best_step`. Each reader walks past checkpoints that cannot be read, naming each
  one it skips, and says so in one sentence when none can.
- `read_variables(path, abstract)`: a model's params and batch_stats from a workdir or one
  checkpoint folder (another run's weights to start from, `config.init_from`).

Saves are asynchronous: `save` returns once the arrays are copied off the device, and the
disk write finishes in the background. The newest `max_to_keep` checkpoints are kept, and the
best one by `best_metric` as well. orbax's messages about failures it has already reported,
or about what is expected here, are hushed by `install_log_filters`, which `main` calls.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp

from cnnjax.errors import WRITE_FIXES, CnnjaxError
from cnnjax.train.state import TrainState

STATE_FIELDS = ("step", "params", "batch_stats", "opt_state", "rng")
COMMIT_MARKER = "commit_success.txt"  # orbax writes it last; without it a save did not finish

Warn = Callable[[str], None]
Found = TypeVar("Found")


class CheckpointError(CnnjaxError):
    """Checkpoints exist but none can be restored, a state is not fit to save, or the disk
    refuses a save."""


class NonFiniteState(CheckpointError):
    """The state to save holds NaN or Inf."""


def _state_arrays(state: TrainState) -> dict[str, Any]:
    return {name: getattr(state, name) for name in STATE_FIELDS}


def _is_finite(tree: Any) -> bool:
    """True when every floating-point leaf of `tree` is free of NaN and Inf."""
    leaves = [x for x in jax.tree.leaves(tree) if jax.numpy.issubdtype(x.dtype,
                                                                        jax.numpy.floating)]
    return bool(jax.jit(lambda xs: jax.numpy.all(jax.numpy.stack(
        [jax.numpy.isfinite(x).all() for x in xs])))(leaves)) if leaves else True


def _score(best_metric: str, best_mode: str) -> Callable[[dict[str, Any]], float]:
    """orbax's `best_fn`: a save's value of `best_metric`; one that lacks it (a run whose
    best metric changed) ranks below every one that has it."""
    worst = -math.inf if best_mode == "max" else math.inf

    def score(metrics: dict[str, Any]) -> float:
        value = metrics.get(best_metric)
        return worst if value is None else float(value)

    return score


class Checkpoints:
    """The checkpoints of one workdir, indexed by train step."""

    def __init__(self, directory: str | Path, *, max_to_keep: int = 2,
                 best_metric: str = "", best_mode: str = "max", asynchronous: bool = True):
        score = _score(best_metric, best_mode)
        policies: list[Any] = [ocp.checkpoint_managers.LatestN(n=max_to_keep)]
        if best_metric:
            policies.append(ocp.checkpoint_managers.BestN(
                get_metric_fn=score, reverse=best_mode == "min", n=1,
                keep_checkpoints_without_metrics=False))
        self.best_metric, self.best_mode = best_metric, best_mode
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory, item_names=("state", "extra"),
            options=ocp.CheckpointManagerOptions(
                create=True, enable_async_checkpointing=asynchronous,
                # With best_fn orbax stores each save's metrics on disk, so a resumed run's
                # manager still knows the best checkpoint instead of deleting it, and
                # `best_step` asks orbax.
                best_fn=score if best_metric else None, best_mode=best_mode,
                preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies)))

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The best step by `best_metric`, as orbax tracks it: the metrics each epoch-end
        save passed are stored beside its checkpoint, so a fresh process knows them too.
        Ties go to the newer step; saves between epochs (no metrics) never count. The newest
        step when no best metric is configured or no checkpoint holds it; None when there
        are none. orbax does not open the checkpoints: a damaged one can be named here, and
        the readers pass over it to the newest readable one, whatever part of it is damaged
        (the JSON records are not ranked a second time to find the next best)."""
        best = self.manager.best_step() if self.best_metric else None
        if best is None or self.best_metric not in (self.manager.metrics(best) or {}):
            return self.latest_step()
        return best

    def steps_best_first(self) -> list[int]:
        """The best step, then the others newest first: the order the best is looked for."""
        best = self.best_step()
        others = [step for step in reversed(self.all_steps()) if step != best]
        return others if best is None else [best, *others]

    def save(self, state: TrainState, extra: dict[str, Any],
             metrics: dict[str, float] | None = None) -> None:
        """Saves `state` and the JSON-able `extra` at `state.step`; `metrics` (an epoch's
        record) make it a candidate for the best. Refuses a state with NaN or Inf. Returns
        once the arrays are copied; `wait` for the disk."""
        step = int(state.step)
        if not _is_finite({"params": state.params, "batch_stats": state.batch_stats}):
            raise NonFiniteState(f"the parameters at step {step} hold NaN or Inf; not saved.")
        if step in self.manager.all_steps():
            return
        with self._writing():
            self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(_state_arrays(state)),
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

    def wait(self) -> None:
        with self._writing():
            self.manager.wait_until_finished()

    def close(self) -> None:
        with self._writing():
            self.manager.close()

    def read_extra(self, step: int) -> dict[str, Any]:
        """The JSON record of checkpoint `step` alone, without reading its arrays."""
        if not (self.directory / str(step) / COMMIT_MARKER).exists():
            raise CheckpointError(f"incomplete: no {COMMIT_MARKER}")
        restored = self.manager.restore(step, args=ocp.args.Composite(
            extra=ocp.args.JsonRestore()))
        return dict(restored["extra"])

    def restore_latest(self, state: TrainState, warn: Warn,
                       check: Callable[[dict[str, Any]], None] = lambda extra: None
                       ) -> tuple[TrainState, dict[str, Any], int] | None:
        """`state` restored from the newest checkpoint that restores, its JSON record and its
        step; None when there are none. `check` sees each checkpoint's JSON record before its
        arrays are read, so that a config the state cannot follow is named rather than
        failing on shapes. Raises CheckpointError when there are checkpoints but none
        restores."""
        return self._first_readable(list(reversed(self.all_steps())),
                                    lambda step, extra: self._restore(state, step), warn,
                                    check)

    def restore_best(self, state: TrainState, warn: Warn
                     ) -> tuple[TrainState, dict[str, Any], int] | None:
        """As `restore_latest`, from the best checkpoint (`best_step`), or the newest readable
        one when the best cannot be read."""
        return self._first_readable(self.steps_best_first(),
                                    lambda step, extra: self._restore(state, step), warn)

    def best_variables(self, abstract: Callable[[dict[str, Any]], dict[str, Any]], warn: Warn
                       ) -> tuple[dict[str, Any], dict[str, Any], int] | None:
        """The model variables alone (no optimizer is needed) of the best readable checkpoint,
        its JSON record and its step; None when there are none. `abstract(extra)` gives the
        variables' shapes from the checkpoint's record (the class count lives there);
        a checkpoint of other shapes is passed over like an unreadable one."""
        return self._first_readable(
            self.steps_best_first(),
            lambda step, extra: read_variables(self.directory / str(step), abstract(extra)),
            warn, verb="read")

    def _restore(self, state: TrainState, step: int) -> TrainState:
        """`state` with its arrays replaced by those of checkpoint `step`."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _state_arrays(state))
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract)))
        return state.replace(**restored["state"])

    def _first_readable(self, steps: list[int], read: Callable[[int, dict[str, Any]], Found],
                        warn: Warn, check: Callable[[dict[str, Any]], None] = lambda e: None,
                        verb: str = "restored") -> tuple[Found, dict[str, Any], int] | None:
        """`read(step, extra)` of the first of `steps` whose JSON record and `read` succeed,
        with that record and step, warning about each one skipped; None when `steps` is
        empty. Errors from `check(extra)` are the caller's and pass through."""
        failures = []
        for step in steps:
            try:
                with _quiet_asyncio():
                    extra = self.read_extra(step)
            except Exception as error:  # any unreadable checkpoint: try the next one
                failures.append(_skip(step, error, warn))
                continue
            check(extra)
            try:
                with _quiet_asyncio():
                    return read(step, extra), extra, step
            except Exception as error:
                failures.append(_skip(step, error, warn))
        if not failures:
            return None
        fix = " Move them away to start afresh, or point --workdir elsewhere." \
            if verb == "restored" else ""
        raise CheckpointError(f"{self.directory} holds checkpoints but none can be {verb}: "
                              f"{'; '.join(failures)}.{fix}")


def _skip(step: int, error: Exception, warn: Warn) -> str:
    reason = " ".join(str(error).split())[:200] or type(error).__name__
    warn(f"skipping the unreadable checkpoint at step {step}: {reason}")
    return f"step {step} ({reason})"


def read_variables(path: str | Path, abstract: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """`params` and `batch_stats` of a saved train state, without its optimizer state, on
    this process's first device whatever devices wrote them (a run sharded over 8 GPUs or
    several hosts reads back on a laptop). `path`: a workdir or its `checkpoints` folder (the
    newest checkpoint), or one checkpoint (`<workdir>/checkpoints/<step>`). With `abstract`
    (arrays or shapes of the model's variables), the saved ones must have its names and
    shapes."""
    item = _state_item(Path(path).expanduser().absolute())
    names = tuple(abstract) if abstract is not None else ("params", "batch_stats")
    variables = _read_state_arrays(item, names)
    for name in names if abstract is not None else ():
        if jax.tree.map(np.shape, variables[name]) != jax.tree.map(np.shape, abstract[name]):
            raise CheckpointError(f"{item}: its {name} do not fit this model (names or shapes "
                                  f"differ); it needs a run of the same architecture and "
                                  f"number of classes.")
    return variables


def _state_item(path: Path) -> Path:
    """The saved train state (`<step>/state`) that `path` names: a checkpoint folder's, or the
    newest of a workdir's or of its checkpoints folder."""
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    if path.name.isdigit() and (path / "state").is_dir():
        return path / "state"
    steps = sorted(int(p.name) for p in path.glob("*") if p.name.isdigit()) \
        if path.is_dir() else []
    if not steps:
        raise CheckpointError(f"{path} is neither a workdir with checkpoints nor a "
                              f"checkpoint.")
    return path / str(steps[-1]) / "state"


def _read_state_arrays(item: Path, names: tuple[str, ...]) -> dict[str, Any]:
    """Entries `names` of the saved train state `item` as arrays on this process's first
    device; the others (the optimizer state) are not read."""
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


def install_log_filters() -> None:
    """Hushes what orbax and tensorstore log about failures `Checkpoints` reports itself in
    one sentence, and orbax's warnings about what is expected here (see the filters below).
    Process-wide, so the program calls it (`main` does), not the library; calling it again
    adds nothing."""
    for name, kind in (("asyncio", _OrbaxIoNeverRetrieved), ("absl", _ExpectedOrbaxWarnings),
                       ("absl", _WriteFailuresRaisedAgain)):
        logger = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())
    if not getattr(sys.unraisablehook, "ignores_closed_loop", False):
        sys.unraisablehook = _ignoring_io_into_closed_loop(sys.unraisablehook)


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


def _ignoring_io_into_closed_loop(previous: Callable[[Any], None]) -> Callable[[Any], None]:
    """`sys.unraisablehook` wrapped: after a failed restore or save, tensorstore's still
    pending reads or writes complete into orbax's closed event loop, and each reports a
    'RuntimeError: Event loop is closed' traceback as an unraisable exception, some before
    the failure reaches us and some long after. They carry nothing; our warning or error
    says it."""
    def hook(unraisable: Any) -> None:
        if (unraisable.exc_type is RuntimeError
                and str(unraisable.exc_value) == "Event loop is closed"):
            return
        previous(unraisable)

    hook.ignores_closed_loop = True  # type: ignore[attr-defined]
    return hook


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
