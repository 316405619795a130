"""The `cnnjax` command after a plain, non-editable install, run from another folder: the
installed copy (not this source tree) runs, with the default experiment."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`pip install --target` of a copy of the repo (its build files stay out of the tree)."""
    source, target = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("target")
    shutil.copytree(REPO, source, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "runs", "__pycache__", "*.egg-info", "build", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(source)],
                   check=True, capture_output=True, timeout=600)
    shutil.rmtree(source)
    return target


def run_cnnjax(installed, cwd, *args, timeout=600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(installed), CNNJAX_DATA_DIR=str(cwd / "data"),
               JAX_PLATFORMS="cpu")
    return subprocess.run([str(installed / "bin" / "cnnjax"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_installed_command_runs_the_default_experiment_from_another_folder(installed,
                                                                           tmp_path):
    helped = run_cnnjax(installed, tmp_path, "--helpshort")  # absl's help exits 1
    assert "--log_level" in helped.stdout, helped.stdout + helped.stderr
    assert f"(default: '{installed / 'cnnjax' / 'configs' / 'base.py'}')" in helped.stdout
    imported = subprocess.run(
        [sys.executable, "-c", "import cnnjax; print(cnnjax.__file__)"], cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(installed)), capture_output=True, text=True)
    assert imported.stdout.strip() == str(installed / "cnnjax" / "__init__.py")
    # The default experiment, switched to the SimpleCNN (its ResNet fields stay unused), with
    # cnnjax's info lines quieted.
    tiny = ["--config.num_epochs=1", "--config.batch_size=4", "--config.eval_batch_size=8",
            "--config.data.image_size=(32,32)", "--config.data.crop_seconds=1.0",
            "--config.data.synthetic.num_per_class=(('normal',6),('murmur',6),('extrastole',6))",
            "--config.model.name=simple_cnn", "--config.model.widths=(4,)",
            "--config.model.dense=(8,)", "--log_level=warning"]
    result = run_cnnjax(installed, tmp_path, *tiny)
    assert result.returncode == 0, result.stderr
    assert "cnnjax: building" not in result.stderr  # an info line, quieted
    workdir = tmp_path / "runs" / "heartbeat_synthetic"
    assert (workdir / "metrics.jsonl").exists() and (workdir / "config.json").exists()
