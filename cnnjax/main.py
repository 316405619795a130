"""Command line: `cnnjax --config=experiments/<name>.py [--config.<field>=value]` (or
`python -m cnnjax.main ...`, or `./launch.sh ...` in the repo).

Modes: `train` (default; resumes from the workdir's newest checkpoint), `eval` (evaluates
the best checkpoint), `cv` (every fold of a k-fold split, then the cv reports), `lr_find`
(the learning-rate range test: lr_find.png and a suggestion) and `predict`
(`--predict.inputs='recordings/*.wav'`: class probabilities, or a regression run's values,
from the best checkpoint into <workdir>/predictions.csv), `export` (the best checkpoint's
weights as one .safetensors file, `--export.out`, that `--config.init.pretrained` starts a
new run from) and `baseline` (log-mel statistics + logistic regression on the experiment's
own split or folds, into <workdir>/baseline_report.json/.md; needs scikit-learn). predict
and export use the config the run saved unless --config names one; `--config.<field>`
overrides apply to it.
Without --config it runs the default experiment, the packaged base config
(cnnjax/configs/base.py; experiments/heartbeat_synthetic.py is its launch file), so the
`cnnjax` command works from any folder after `pip install .`. Messages go through cnnjax's
logger (cnnjax/logs.py): --log_level sets cnnjax's own, absl's --verbosity the libraries'.
Mistakes a user can make end in one line on stderr: exit code 2 for a bad flag, config file
or config value, 1 for missing or malformed data or a workdir that cannot be written.
"""

from __future__ import annotations

import errno
import os
import runpy
import sys
from pathlib import Path
from typing import Any, NoReturn

from absl import app, flags, logging
from ml_collections import config_flags

from cnnjax.errors import WRITE_FIXES, CnnjaxError, ConfigError
from cnnjax.logs import LEVELS, logger, set_log_level

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "base.py"
DEFAULT_EXPERIMENT = "heartbeat_synthetic"  # the default config's name: runs/<it> by default


def _fail(message: str, code: int) -> NoReturn:
    print(f"cnnjax: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _define_flags() -> None:
    config_flags.DEFINE_config_file(
        "config", str(DEFAULT_CONFIG), "Experiment config file (ml_collections get_config()); "
        "override any field with --config.<field>=value.", lock_config=True)
    flags.DEFINE_string(
        "workdir", None, "Where checkpoints, metrics and plots go (default: runs/<config name>).")
    flags.DEFINE_enum("mode", "train",
                      ["train", "eval", "lr_find", "predict", "cv", "export", "baseline"],
                      "train: train and evaluate, resuming if the workdir has a checkpoint; "
                      "cv: train and evaluate every fold of config.data.num_folds (5 when "
                      "0) in <workdir>/fold_<i>, then cv_report.json/.md; "
                      "eval: evaluate the workdir's best checkpoint; lr_find: sweep the "
                      "learning rate and suggest one; predict: classify --predict.inputs "
                      "with the workdir's best checkpoint; export: write the workdir's best "
                      "weights to --export.out for config.init.pretrained; baseline: log-mel "
                      "statistics + logistic regression on the same split or folds, into "
                      "<workdir>/baseline_report.json/.md.")
    flags.DEFINE_enum("log_level", "info", list(LEVELS), "cnnjax's own messages from this "
                      "level up; the libraries' follow --verbosity (default: warnings only).")
    flags.DEFINE_string("coordinator_address", "", "Several processes: host:port of process "
                        "0 (else JAX_COORDINATOR_ADDRESS, or found under SLURM, Open MPI and "
                        "TPU pods).")
    flags.DEFINE_integer("num_processes", 0, "Several processes: how many in all.")
    flags.DEFINE_integer("process_id", -1, "Several processes: this one's index, 0 first.")
    flags.DEFINE_list("predict.inputs", [], "--mode=predict: recordings to classify, as "
                      "comma-separated paths or globs ('**' recursive).")
    flags.DEFINE_string("export.out", "", "--mode=export: the .safetensors file to write "
                        "(default <workdir>/weights.safetensors).")
    flags.DEFINE_enum("predict.windows", "", ["", "centre", "all"],
                      "--mode=predict: average over windows covering the whole recording "
                      "('all') or take the centre one; default: as the run's evaluation did "
                      "(config.data.eval_windows).")


def _config_path(argv: list[str]) -> str:
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return str(DEFAULT_CONFIG)


def _unknown_field(argv: list[str]) -> str:
    """Names the first `--config.<field>` override that the config file does not have."""
    path = _config_path(argv)
    try:
        config = runpy.run_path(path)["get_config"]()
    except Exception as error:  # the file itself is broken: say that instead
        return f"cannot load config file {path}: {error}"
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        parts = arg[len("--config."):].split("=", 1)[0].split(".")
        node, prefix = config, "config"
        for part in parts:
            if not hasattr(node, "keys") or part not in node:
                fields = sorted(node.keys()) if hasattr(node, "keys") else []
                return (f"{prefix}.{part} is not a field of {path}; the fields of {prefix} are "
                        f"{fields}.")
            node, prefix = node[part], f"{prefix}.{part}"
    return f"cannot apply the --config overrides {argv[1:]} to {path}."


def parse_flags(argv: list[str]) -> list[str]:
    """Defines and parses the flags; any flag, config file or override error is one line and
    exit code 2. (config_flags reads the overrides while the flag is defined.)"""
    try:
        _define_flags()
        _help_as_main()
        remaining = flags.FLAGS(argv)
        flags.FLAGS["config"].value.keys()  # loads the file now, to report a broken one here
        return remaining
    except (AttributeError, KeyError):
        _fail(_unknown_field(argv), 2)
    except (flags.Error, OSError) as error:
        _fail(" ".join(str(error).split()), 2)


def _help_as_main() -> None:
    """Under the `cnnjax` command the main module is pip's wrapper script, whose flags and
    docstring absl's --help/--helpshort would show (none): it shows this module's instead."""
    wrapper = sys.modules["__main__"]
    if wrapper is sys.modules[__name__]:
        return
    wrapper.__doc__ = __doc__
    for flag in flags.FLAGS.get_key_flags_for_module(__name__):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def _predict_config(workdir: Path) -> Any:
    """The config named by --config, else the run's saved one with any --config.<field>
    overrides applied."""
    if flags.FLAGS["config"].present:
        return flags.FLAGS["config"].value
    from cnnjax.predict import saved_config

    config = saved_config(workdir)
    for name in flags.FLAGS:
        if name.startswith("config.") and flags.FLAGS[name].present:
            *parents, field = name.split(".")[1:]
            node = config
            try:
                for part in parents:
                    node = node[part]
                node[field] = flags.FLAGS[name].value
            except (KeyError, TypeError) as error:
                raise ConfigError(f"--{name} does not fit {workdir / 'config.json'}: "
                                  f"{error}") from None
    return config


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}; flags look like --name=value.", 2)
    set_log_level(flags.FLAGS.log_level)
    if not flags.FLAGS["verbosity"].present:
        # Library INFO logs (orbax writes a dozen lines per checkpoint) drown the progress
        # bar; --verbosity=0 brings them back.
        logging.set_verbosity(logging.WARNING)
    from cnnjax.checkpoint import install_log_filters
    from cnnjax.config import validate_config
    from cnnjax.parallel import initialize_distributed
    from cnnjax.evaluation import evaluate_checkpoint
    from cnnjax.train.loop import train_and_evaluate
    from cnnjax.train.lr_find import find_learning_rate

    install_log_filters()
    try:
        initialize_distributed(flags.FLAGS.coordinator_address, flags.FLAGS.num_processes,
                               flags.FLAGS.process_id)
    except ConfigError as error:
        _fail(str(error), 2)
    config = flags.FLAGS["config"].value
    workdir = flags.FLAGS.workdir or Path("runs") / _config_name()
    try:
        if flags.FLAGS.mode not in ("predict", "export"):  # those read the run's saved config
            validate_config(config)
        if flags.FLAGS.mode == "train":
            train_and_evaluate(config, workdir)
        elif flags.FLAGS.mode == "eval":
            evaluate_checkpoint(config, workdir)
        elif flags.FLAGS.mode == "lr_find":
            find_learning_rate(config, workdir)
        elif flags.FLAGS.mode == "cv":
            from cnnjax.cv import cross_validate

            cross_validate(config, workdir)
        elif flags.FLAGS.mode == "export":
            _run_export(Path(workdir))
        elif flags.FLAGS.mode == "baseline":
            from cnnjax.baseline import run_baseline

            run_baseline(config, workdir)
        else:
            _run_predict(Path(workdir))
    except ConfigError as error:
        _fail(str(error), 2)
    except CnnjaxError as error:
        _fail(str(error), 1)
    except KeyboardInterrupt:  # Ctrl-C outside the train loop, which saves and exits itself
        print("\ncnnjax: interrupted by Ctrl-C; run the same command again to continue.",
              file=sys.stderr, flush=True)
        sys.exit(130)
    except OSError as error:
        message = _unwritable(error, Path(workdir))
        if message is None:
            raise
        _fail(message, 1)


def _config_name() -> str:
    if not flags.FLAGS["config"].present:
        return DEFAULT_EXPERIMENT
    return Path(config_flags.get_config_filename(flags.FLAGS["config"])).stem


def _unwritable(error: OSError, workdir: Path) -> str | None:
    """One sentence for a write into the workdir (or the creation of it or a folder above
    it) that failed for want of permission or space; None for any other OS error. A write
    that runs out of space names no file: the workdir, where the run writes, is named."""
    fix = WRITE_FIXES.get(error.errno)
    if fix is None:
        return None
    workdir = workdir.absolute()
    if error.filename is None:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            return None
        return (f"{error.strerror} while writing; free space on the disk of {workdir}, "
                f"where this run writes, or choose another --workdir.")
    path = Path(os.fsdecode(error.filename)).absolute()
    if not (path == workdir or workdir in path.parents or path in workdir.parents):
        return None
    return f"cannot write {path}: {error.strerror}; {fix} or choose another --workdir."


def _run_predict(workdir: Path) -> None:
    from cnnjax.predict import predict

    inputs = flags.FLAGS["predict.inputs"].value
    if not inputs:
        _fail("--mode=predict needs the recordings to classify: "
              "--predict.inputs='recordings/*.wav'.", 2)
    predict(_predict_config(workdir), workdir, inputs, flags.FLAGS["predict.windows"].value)


def _run_export(workdir: Path) -> None:
    from cnnjax.export import export_weights

    out = flags.FLAGS["export.out"].value or str(workdir / "weights.safetensors")
    path = export_weights(_predict_config(workdir), workdir, out)
    logger.info(f"wrote the best weights of {workdir} to {path}; start a run from them with "
                f"--config.init.pretrained={path}")


def run() -> None:
    from cnnjax.runtime import use_fast_xla_flags

    use_fast_xla_flags()  # before JAX starts its backend
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
