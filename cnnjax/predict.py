"""`predict(config, workdir, inputs)`: class probabilities (or predicted values, for a
regression run) for new recordings from a trained run's best checkpoint, written to
`<workdir>/predictions.csv`.

A recording takes the path a validation recording takes in training: read (cut at
`config.data.max_seconds`), held as 16-bit samples, resampled, turned into a log-mel with
the run's frontend, cut into `config.data.crop_seconds` windows as evaluation cuts them
(`config.data.eval_windows`: consecutive windows covering the whole recording, or the centre
one) and the softmax (the predicted value) averaged over them; so a validation file gets
exactly what evaluation computed for it. `windows` overrides the config's choice.

The CSV has the columns `file`, `predicted` (a class name, or a value), for a classifier
one probability per class (the class names), and `error`: empty, or why the file could not
be read (its other cells are then empty).
"""

from __future__ import annotations

import glob
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from cnnjax import report as reporting
from cnnjax.audio.io import AudioError, read_audio
from cnnjax.checkpoint import Checkpoints
from cnnjax.config import validate_config
from cnnjax.configs import base
from cnnjax.data.builders import recording_flags, to_int16
from cnnjax.data.datasets import (Recordings, feature_workers, image_settings, mel_settings,
                                  model_inputs, spectrograms)
from cnnjax.data.feature_cache import FeatureCache
from cnnjax.data.pipeline import EVAL_WINDOWS, window_images
from cnnjax.errors import DataError
from cnnjax.logs import logger
from cnnjax.models.registry import get_model
from cnnjax.parallel import DataParallel
from cnnjax.progress import progress_bar
from cnnjax.train.adapt_norm import adapted
from cnnjax.train.losses import Loss
from cnnjax.train.state import inference_state
from cnnjax.train.tasks import Task, task_for

PREDICTIONS_FILE = "predictions.csv"



def saved_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The config a run was trained with (its `config.json`). A field it lacks (added to
    cnnjax after it was written) holds the base config's default, the behaviour of the code
    that wrote it, as resumption reads it (`cnnjax.train.resume.config_changes`)."""
    path = Path(workdir) / "config.json"
    if not path.is_file():
        raise DataError(f"{path} does not exist: train a run in {workdir} first, or name "
                        f"its experiment with --config.")
    return ml_collections.ConfigDict(_with_defaults(json.loads(path.read_text()),
                                                    base.get_config().to_dict()))


def _with_defaults(saved: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """`saved` with every field it lacks taken from `defaults`, at every depth."""
    merged = dict(saved)
    for key, default in defaults.items():
        if key not in merged:
            merged[key] = default
        elif isinstance(default, dict) and isinstance(merged[key], dict):
            merged[key] = _with_defaults(merged[key], default)
    return merged


def input_files(inputs: str | Sequence[str]) -> list[str]:
    """The files `inputs` names: each entry a path, or a glob (`**` recursive) whose matches
    are sorted. A glob matching nothing is an error, lest a typo give an empty table."""
    files = []
    for pattern in [inputs] if isinstance(inputs, str) else inputs:
        pattern = os.path.expanduser(pattern)
        if not glob.has_magic(pattern):
            files.append(pattern)
            continue
        matches = sorted(path for path in glob.glob(pattern, recursive=True)
                         if os.path.isfile(path))
        if not matches:
            raise DataError(f"{pattern} matches no file.")
        files.extend(matches)
    if not files:
        raise DataError("no input files given: pass --predict.inputs='recordings/*.wav'.")
    return files


def read_spectrograms(paths: Sequence[str], config: Any
                      ) -> tuple[list[np.ndarray | None], list[str]]:
    """Each file's log-mel as training computes it (not cached: new files would only fill
    the cache), or None and the reason it cannot be read. What a build would flag (cut,
    silent, shorter than its header) is logged as a note."""
    records, errors = [], []
    with progress_bar(len(paths), "reading", "file") as bar:
        for path in paths:
            bar.update()
            try:
                samples, rate = read_audio(path, config.data.max_seconds)
            except AudioError as error:
                errors.append(str(error).removeprefix(f"{error.path}: "))
                continue
            flags = recording_flags(Path(path), samples, rate, config.data.max_seconds)
            if flags:
                bar.write(f"cnnjax: note: {path} is {' and '.join(flags)}", file=sys.stderr)
            records.append({"audio": to_int16(samples), "sample_rate": rate})
            errors.append("")
    mel = mel_settings(config)
    workers = feature_workers(int(config.data.feature_workers))
    computed = iter(model_inputs(config, spectrograms(
        Recordings((), records, {}), mel, FeatureCache(None, {}), config.audio.frontend,
        workers)))
    return [None if error else next(computed) for error in errors], errors


def window_outputs(model: Any, variables: dict[str, Any], images: np.ndarray,
                   batch_size: int, task: Task, parallel_mode: str = "jit",
                   adapt_batch_norm: bool = False) -> np.ndarray:
    """`task.window_outputs` (softmax probabilities, hinge scores or values) of the
    eval-mode model over `images`, in batches of `batch_size` (the last one zero-padded, so
    one shape is compiled), through the eval step training compiles (`config.parallel`).
    `adapt_batch_norm`: BatchNorm statistics re-estimated on `images` first
    (`cnnjax.train.adapt_norm`)."""
    parallel = DataParallel(parallel_mode, task.loss)
    state = parallel.place(inference_state(model, variables))
    if adapt_batch_norm:
        state = adapted(state, [images], parallel, batch_size)
    results = []
    with progress_bar(len(images), "predicting", "window") as bar:
        for first in range(0, len(images), batch_size):
            batch = images[first:first + batch_size]
            padded = np.zeros((batch_size, *images.shape[1:]), np.float32)
            padded[:len(batch)] = batch
            logits = parallel.evaluate_batch(state, {"image": padded})["logits"]
            results.append(np.asarray(task.window_outputs(logits[:len(batch)])))
            bar.update(len(batch))
    return np.concatenate(results)


def _task(extra: dict[str, Any]) -> Task:
    """The task of the loss a checkpoint's record names (with a regression's target
    scaling)."""
    return task_for(Loss(**extra["loss"]))


def abstract_variables(model: Any, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Shapes and dtypes of `model`'s params and batch_stats, without computing them: what
    a checkpoint's variables must fit."""
    dummy = jax.ShapeDtypeStruct((1, *input_shape), jax.numpy.float32)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False),
                            dummy)
    return {"params": shapes["params"], "batch_stats": shapes.get("batch_stats", {})}


def load_best(config: Any, workdir: Path, input_shape: tuple[int, ...]
              ) -> tuple[Any, dict[str, Any], list[str], int, Task]:
    """The model, the variables of the run's best readable checkpoint, its class names, its
    step and its task. The class count and the loss (with a regression's target scaling)
    come from the checkpoint, so no training data is read."""
    def model_for(extra: dict[str, Any]) -> Any:
        return get_model(config.model,
                         num_classes=_task(extra).num_outputs(len(extra["class_names"])))

    missing = DataError(f"{workdir / 'checkpoints'} holds no checkpoint: train first with "
                        f"--mode=train --workdir={workdir}.")
    if not (workdir / "checkpoints").is_dir():
        raise missing
    c = config.checkpoint
    checkpoints = Checkpoints(workdir / "checkpoints", max_to_keep=c.max_to_keep,
                              best_metric=c.best_metric, best_mode=c.best_mode,
                              asynchronous=False)
    try:
        found = checkpoints.best_variables(lambda extra: abstract_variables(
            model_for(extra), input_shape), warn=logger.warning)
    finally:
        checkpoints.close()
    if found is None:
        raise missing
    variables, extra, step = found
    return (model_for(extra), variables, [str(name) for name in extra["class_names"]], step,
            _task(extra))


def predict(config: Any, workdir: str | Path, inputs: str | Sequence[str],
            windows: str = "") -> Path:
    """Writes `<workdir>/predictions.csv` for the recordings `inputs` names (paths or globs)
    with the best checkpoint of the run in `workdir`, and returns its path. `windows`:
    'all', 'centre', or '' for the config's `data.eval_windows`."""
    windows = windows or config.data.eval_windows
    if windows not in EVAL_WINDOWS:
        raise ValueError(f"windows={windows!r} is not one of {EVAL_WINDOWS}.")
    validate_config(config)
    workdir = Path(workdir)
    paths = input_files(inputs)
    image = image_settings(config, mel_settings(config))
    model, variables, class_names, step, task = load_best(
        config, workdir, (*image.image_size, image.channels))

    specs, errors = read_spectrograms(paths, config)
    images, owner = [], []
    for i, spectrogram in enumerate(specs):
        if spectrogram is not None:
            window = window_images(spectrogram, image, windows)
            images += window
            owner += [i] * len(window)
    rows = [{"file": path, "predicted": "", "error": error}
            for path, error in zip(paths, errors)]
    if images:
        outputs = window_outputs(model, variables, np.stack(images), config.eval_batch_size,
                                 task, config.parallel, config.adapt_batch_norm)
        owner = np.asarray(owner)
        for i in np.unique(owner):
            mean = outputs[owner == i].mean(axis=0)
            rows[i].update(task.prediction_fields(mean, class_names))
    path = workdir / PREDICTIONS_FILE
    reporting.write_csv(path, ["file", *task.prediction_columns(class_names), "error"], rows)
    for file, error in zip(paths, errors):
        if error:
            logger.info(f"skipped {file}: {error}")
    readable = sum(not error for error in errors)
    logger.info(f"predicted {readable} of {len(paths)} recordings with the checkpoint at step "
         f"{step} ({windows} window{'s' if windows == 'all' else ''}); written to {path}")
    if not readable:
        raise DataError(f"none of the {len(paths)} inputs could be read; see {path}.")
    return path
