"""Which checkpoint evaluation and prediction read: the best one by `config.checkpoint`'s
metric, not merely the newest (a run that overfits late would otherwise report its last,
worse epoch). Unreadable checkpoints are passed over with a warning, as when resuming."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from cnnjax.checkpoint import CheckpointError, Checkpoints, read_state_arrays
from cnnjax.errors import DataError
from cnnjax.train.run import final_report, log, open_checkpoints, setup_run
from cnnjax.train.state import TrainState
from cnnjax.train.validation import evaluate

Warn = Callable[[str], None]


def steps_best_first(checkpoints: Checkpoints) -> list[int]:
    """The best step, then the others newest first: the order to try them in."""
    best = checkpoints.best_step()
    others = [step for step in reversed(checkpoints.all_steps()) if step != best]
    return others if best is None else [best, *others]


def restore_best(checkpoints: Checkpoints, state: TrainState, warn: Warn
                 ) -> tuple[TrainState, dict[str, Any], int] | None:
    """`state` restored from the best readable checkpoint, its JSON record and its step;
    None when there are no checkpoints. Raises CheckpointError when none restores."""
    best = checkpoints.best_step()
    if best is None:
        return None
    try:
        restored, extra = checkpoints.restore(state, best)
        return restored, extra, best
    except Exception as error:  # fall back to the newest readable one, as resuming does
        warn(f"the best checkpoint (step {best}) cannot be restored ({_reason(error)}); "
             f"using the newest readable one")
    return checkpoints.restore_newest_good(state, warn)


def read_variables(step_dir: Path, abstract: dict[str, Any]) -> dict[str, Any]:
    """Only `params` and `batch_stats` of a saved train state (no optimizer is needed), on
    this process's first device whatever devices wrote them; they must have the names and
    shapes of `abstract`."""
    variables = read_state_arrays(step_dir / "state")
    if jax.tree.map(np.shape, variables) != jax.tree.map(np.shape, abstract):
        raise CheckpointError(f"{step_dir}: its variables do not fit the model of the config "
                              f"(names or shapes differ).")
    return variables


def best_variables(checkpoints: Checkpoints, abstract: Callable[[dict[str, Any]], Any],
                   warn: Warn) -> tuple[dict[str, Any], dict[str, Any], int] | None:
    """The model variables of the best readable checkpoint, its JSON record and its step;
    None when there are no checkpoints. `abstract(extra)` gives the variables' shapes from
    the checkpoint's record (the class count lives there). Raises CheckpointError when
    there are checkpoints but none can be read."""
    failures = []
    for step in steps_best_first(checkpoints):
        try:
            extra = checkpoints.read_extra(step)
            variables = read_variables(checkpoints.directory / str(step), abstract(extra))
        except Exception as error:  # unreadable or of another shape: try the next one
            failures.append(f"step {step} ({_reason(error)})")
            warn(f"skipping the checkpoint at step {step}: {_reason(error)}")
            continue
        return variables, extra, step
    if failures:
        raise CheckpointError(f"{checkpoints.directory} holds checkpoints but none can be "
                              f"read: {'; '.join(failures)}.")
    return None


def abstract_variables(model: Any, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Shapes and dtypes of `model`'s params and batch_stats, without computing them."""
    dummy = jax.ShapeDtypeStruct((1, *input_shape), jax.numpy.float32)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False),
                            dummy)
    return {"params": shapes["params"], "batch_stats": shapes.get("batch_stats", {})}


def _reason(error: Exception) -> str:
    return " ".join(str(error).split())[:200] or type(error).__name__


def evaluate_checkpoint(config: Any, workdir: str | Path) -> dict[str, Any]:
    """`--mode=eval`: evaluates the best readable checkpoint in `workdir` (by
    config.checkpoint.best_metric; the newest without one) on the validation set, on the
    devices `config.parallel` names, and rewrites the reports."""
    workdir = Path(workdir)
    run, state = setup_run(config)
    checkpoints = open_checkpoints(config, workdir)
    try:
        restored = restore_best(checkpoints, state, warn=lambda m: log(f"warning: {m}"))
    finally:
        checkpoints.close()
    if restored is None:
        raise DataError(f"{workdir / 'checkpoints'} holds no checkpoint: train first with "
                        f"--mode=train --workdir={workdir}.")
    state, _, step = restored
    state = run.parallel.place(state)
    evaluation = evaluate(state, run.datasets, run.parallel.evaluate_batch, run.loss)
    return final_report(workdir, run, evaluation, title=f"Validation, checkpoint at step {step}")
