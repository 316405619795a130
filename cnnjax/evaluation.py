"""`--mode=eval`: a finished run's checkpoint evaluated on the validation set. Which checkpoint
it reads, the best one by `config.checkpoint`'s metric, and how unreadable ones are passed
over, is `cnnjax.checkpoint`'s (`Checkpoints.restore_best`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnjax.errors import DataError
from cnnjax.logs import logger
from cnnjax.train.run import final_report, open_checkpoints, setup_run


def evaluate_checkpoint(config: Any, workdir: str | Path) -> dict[str, Any]:
    """Evaluates the best readable checkpoint in `workdir` (by config.checkpoint.best_metric;
    the newest without one) on the validation set, on the devices `config.parallel` names,
    and rewrites the reports."""
    workdir = Path(workdir)
    run, state = setup_run(config)
    checkpoints = open_checkpoints(config, workdir)
    try:
        restored = checkpoints.restore_best(state, warn=logger.warning)
    finally:
        checkpoints.close()
    if restored is None:
        raise DataError(f"{workdir / 'checkpoints'} holds no checkpoint: train first with "
                        f"--mode=train --workdir={workdir}.")
    state, _, step = restored
    state = run.parallel.place(state)
    evaluation = run.evaluate(state)
    return final_report(workdir, run, evaluation, title=f"Validation, checkpoint at step {step}")
