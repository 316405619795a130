"""`--mode=export` and starting from the exported file: a tiny run trained in a subprocess,
exported, loaded back exactly, into another class count with a seeded fresh head, refused
when it is of another architecture or truncated, and fine-tuned from by the real command."""

import json

import jax
import numpy as np
import pytest
import soundfile as sf

from cnnjax import models
from cnnjax.audio.synth import synthesize
from cnnjax.errors import ConfigError
from cnnjax.export import export_weights
from cnnjax.predict import load_best, saved_config
from cnnjax.pretrained import WeightsError, load_torchvision, read_metadata
from cnnjax.pretrained.porting import write_converted
from test_predict import TINY, run_main

INPUT = (32, 32, 1)  # what TINY makes of a 1 s window


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(workdir, data dir, exported file) of a tiny pretraining run."""
    root = tmp_path_factory.mktemp("export")
    workdir, data_dir, out = root / "run", root / "data", root / "backbone.safetensors"
    trained = run_main(f"--workdir={workdir}", *TINY, data_dir=data_dir)
    assert trained.returncode == 0, trained.stderr
    written = run_main(f"--workdir={workdir}", "--mode=export", f"--export.out={out}",
                       data_dir=data_dir)
    assert written.returncode == 0, written.stderr
    assert f"--config.init.pretrained={out}" in written.stderr
    return workdir, data_dir, out


def leaves_equal(a, b) -> bool:
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_export_records_the_architecture_classes_and_input(exported):
    workdir, _, out = exported
    metadata = read_metadata(out)
    assert (metadata["arch"], metadata["num_classes"], metadata["in_channels"]) == \
        ("resnet18", "3", "1")
    assert json.loads(metadata["class_names"]) == ["extrastole", "murmur", "normal"]
    recorded = json.loads(metadata["input"])
    assert recorded["data.image_size"] == [32, 32] and recorded["data.crop_seconds"] == 1.0
    assert recorded["audio.n_mels"] == saved_config(workdir).audio.n_mels
    assert metadata["source"].startswith(f"cnnjax run {workdir.name}, step ")


def test_export_loads_back_to_the_runs_own_network_exactly(exported):
    workdir, _, out = exported
    model, variables, _, step, _ = load_best(saved_config(workdir), workdir, INPUT)
    assert metadata_step(out) == step
    loaded = load_torchvision(out, "resnet18", num_classes=3, in_channels=1)
    assert leaves_equal(loaded, variables)
    x = np.random.default_rng(0).normal(size=(4, *INPUT)).astype(np.float32)
    body = models.resnet18(num_classes=3, in_channels=1, head="none")
    body_variables = {name: {k: v for k, v in tree.items() if k != "fc"}
                      for name, tree in loaded.items()}
    np.testing.assert_array_equal(body.apply(body_variables, x, train=False),
                                  body.apply({name: {k: v for k, v in tree.items() if k != "fc"}
                                              for name, tree in variables.items()},
                                             x, train=False))
    np.testing.assert_array_equal(model.apply(loaded, x, train=False),
                                  model.apply(variables, x, train=False))


def metadata_step(path) -> int:
    return int(read_metadata(path)["source"].rsplit(" ", 1)[1])


def test_another_class_count_gets_a_fresh_seeded_head(exported):
    _, _, out = exported
    whole = load_torchvision(out, "resnet18", num_classes=3, in_channels=1)
    five = load_torchvision(out, "resnet18", num_classes=5, in_channels=1, seed=7)
    fresh = models.resnet18(num_classes=5, in_channels=1).init(
        jax.random.PRNGKey(7), np.zeros((1, *INPUT), np.float32), train=False)
    assert leaves_equal(five["params"]["fc"], fresh["params"]["fc"])
    assert not leaves_equal(five["params"]["fc"],
                            load_torchvision(out, "resnet18", num_classes=5, in_channels=1,
                                             seed=8)["params"]["fc"])
    for name in ("params", "batch_stats"):
        assert leaves_equal({k: v for k, v in five[name].items() if k != "fc"},
                            {k: v for k, v in whole[name].items() if k != "fc"})


def test_another_architecture_and_a_truncated_file_are_one_clear_error(exported, tmp_path):
    _, _, out = exported
    with pytest.raises(WeightsError, match=r"does not fit cnnjax's resnet34 \(it looks like "
                                           r"resnet18"):
        load_torchvision(out, "resnet34", num_classes=3, in_channels=1)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    with pytest.raises(WeightsError, match="truncated"):
        load_torchvision(truncated, "resnet18", num_classes=3, in_channels=1)


def test_export_of_a_model_cut_short_or_not_ported_is_refused(exported, tmp_path):
    workdir, _, _ = exported
    config = saved_config(workdir)
    config.model.features_at = "layer3"
    with pytest.raises(ConfigError, match="needs the whole network; this run's model is cut "
                                          "at 'layer3'"):
        export_weights(config, workdir, tmp_path / "cut.safetensors")
    config = saved_config(workdir)
    config.model.name = "simple_cnn"
    with pytest.raises(ConfigError, match="not 'simple_cnn'"):
        export_weights(config, workdir, tmp_path / "simple.safetensors")
    assert not list(tmp_path.iterdir())


def two_class_folder(root):
    """An audio_folder of synthetic normal and murmur recordings: a task with other classes."""
    for label in ("normal", "murmur"):
        (root / label).mkdir(parents=True)
        for i in range(8):
            rng = np.random.default_rng(100 * (label == "murmur") + i)
            sf.write(root / label / f"{label}_{i}.wav", synthesize(label, rng, 4000, 2.0),
                     4000, subtype="PCM_16")
    return root


@pytest.mark.slow
def test_pretrain_export_fine_tune_chain(exported, tmp_path):
    _, data_dir, out = exported
    folder = two_class_folder(tmp_path / "recordings")
    finetune = tmp_path / "finetune"
    result = run_main(f"--workdir={finetune}", *TINY, "--config.data.name=audio_folder",
                      f"--config.data.manual_dir={folder}", f"--config.init.pretrained={out}",
                      "--config.freeze=('body',)", "--config.fine_tune.unfreeze_after=1",
                      "--config.audio.fmax=1000.0", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    assert f"starting from the weights {out} (cnnjax run" in result.stderr
    assert "trained on other inputs: audio.fmax 2000.0 -> 1000.0" in result.stderr
    report = json.loads((finetune / "report.json").read_text())
    assert report["class_names"] == ["murmur", "normal"]
    other = run_main(f"--workdir={tmp_path / 'r34'}", *TINY, "--config.model.name=resnet34",
                     f"--config.init.pretrained={out}", data_dir=data_dir)
    assert other.returncode == 1
    assert f"cnnjax: error: {out} does not fit cnnjax's resnet34 (it looks like resnet18" \
        in other.stderr


def test_a_body_without_a_classifier_loads_under_a_fresh_one(tmp_path):
    """What export writes for a run with its own head: the body, then a seeded `fc`."""
    x = np.zeros((1, *INPUT), np.float32)
    fastai = models.resnet18(num_classes=3, in_channels=1, head="fastai").init(
        jax.random.PRNGKey(1), x, train=False)
    body = {name: {k: v for k, v in tree.items() if k != "head"}
            for name, tree in fastai.items()}
    out = tmp_path / "body.safetensors"
    write_converted(out, body, "resnet18", {"source": "test"})
    assert read_metadata(out)["num_classes"] == ""
    loaded = load_torchvision(out, "resnet18", num_classes=4, in_channels=1, seed=2)
    fresh = models.resnet18(num_classes=4, in_channels=1).init(jax.random.PRNGKey(2), x,
                                                               train=False)
    assert leaves_equal(loaded["params"]["fc"], fresh["params"]["fc"])
    assert leaves_equal({k: v for k, v in loaded["params"].items() if k != "fc"},
                        body["params"])
    with pytest.raises(WeightsError, match="must end in .safetensors"):
        write_converted(tmp_path / "body.npz", body, "resnet18", {})
