"""The packaged base config and the one validation gate: every experiment starts from the
base, the gate names the field and its valid values, and a config switches models."""

import runpy

import pytest

from conftest import REPO
from cnnjax.config import validate_config
from cnnjax.configs import base
from cnnjax.errors import ConfigError
from cnnjax.models import SimpleCNN
from cnnjax.train.phases import training_phases
from cnnjax.train.recipe import phase_setup

EXPERIMENTS = sorted((REPO / "experiments").glob("*.py"))


def flat(config, prefix=""):
    out = {}
    for key, value in config.items():
        if hasattr(value, "items"):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_experiment_is_the_base_config_with_overrides_and_passes_the_gate(path):
    config = runpy.run_path(str(path))["get_config"]()
    assert set(flat(config)) == set(flat(base.get_config())), path.name
    validate_config(config)


def test_the_default_experiment_is_the_base_config():
    default = runpy.run_path(str(REPO / "experiments" / "heartbeat_synthetic.py"))
    assert default["get_config"]().to_dict() == base.get_config().to_dict()


def test_every_base_field_is_documented_by_a_comment():
    """A field's line, or the line above it, carries a comment."""
    lines = (REPO / "cnnjax" / "configs" / "base.py").read_text().splitlines()
    undocumented = [line.strip() for i, line in enumerate(lines)
                    if line.strip().startswith("config.") and " = " in line
                    and "ConfigDict()" not in line and "#" not in line
                    and not lines[i - 1].strip().startswith("#")]
    assert not undocumented, undocumented


def test_the_default_experiment_switches_to_simple_cnn():
    """`--config.model.name=simple_cnn` on the default experiment: the fields of the ResNets
    stay at their base values and are not given to the SimpleCNN."""
    config = base.get_config()
    config.model.name = "simple_cnn"
    config.model.widths, config.model.dense = (4,), (8,)
    validate_config(config)
    setup = phase_setup(config, training_phases(config)[0], 3, (32, 32, 1), steps_per_epoch=1)
    assert isinstance(setup.model, SimpleCNN) and setup.model.widths == (4,)


def test_a_field_the_model_does_not_take_is_named_when_set():
    config = base.get_config()
    config.model.name = "simple_cnn"
    config.model.head = "fastai"
    with pytest.raises(ConfigError, match=r"config.model.head='fastai' is not a field of model "
                                          r"'simple_cnn'; its fields are \['batch_norm'"):
        validate_config(config)


@pytest.mark.parametrize("field, value, message", [
    ("freeze_norm", "thaw", "config.freeze_norm='thaw' is not valid; choose one of "
                            "['train', 'frozen']"),
    ("loss.name", "focal", "config.loss.name='focal' is not valid; choose one of"),
    ("parallel", "fsdp", "config.parallel='fsdp' is not valid; choose one of"),
    ("optimizer.name", "sgd", "config.optimizer.name='sgd' is not valid; choose one of "
                              "['adam', 'adamw']"),
    ("model.name", "resnet19", "config.model.name='resnet19' is not valid; choose one of"),
    ("loss.huber_delta", 0.0, "config.loss.huber_delta=0.0 must be positive"),
    ("augment.filter_points", 0, "config.augment.filter_points=0 must be positive"),
    ("augment.noise_db", 6.0, "config.augment.noise_db=6.0 is the loudest noise level"),
    ("augment.noise_db", -90.0, "between -config.audio.top_db=-80.0 and 0"),
    ("loss.label_smoothing", 1.5, "config.loss.label_smoothing=1.5 must lie in [0, 1]"),
    ("loss.class_weights", "1,-2,3", "config.loss.class_weights='1,-2,3' must be 'none', "
                                     "'balanced' or positive"),
    ("checkpoint.best_metric", "val_mae", "config.checkpoint.best_metric='val_mae' is not "
                                          "recorded when config.loss.name="),
])
def test_the_gate_names_the_field_and_its_valid_values(field, value, message):
    config = base.get_config()
    *parents, name = field.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[name] = value
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert message in str(error.value)


def test_the_gate_checks_what_only_regression_or_hinge_forbids():
    config = base.get_config()
    config.loss.name, config.checkpoint.best_metric = "mse", "val_mae"
    config.checkpoint.best_mode = "min"
    validate_config(config)
    config.loss.label_smoothing = 0.1
    with pytest.raises(ConfigError, match="regresses: label smoothing"):
        validate_config(config)
    config.loss.label_smoothing = 0.0
    config.augment.mixup_alpha = 0.4
    with pytest.raises(ConfigError, match="mixup_alpha mixes class labels"):
        validate_config(config)
    config = base.get_config()
    config.loss.name, config.loss.label_smoothing = "hinge", 0.1
    with pytest.raises(ConfigError, match="not 'hinge'"):
        validate_config(config)


def test_image_experiments_do_not_need_valid_audio_fields():
    config = runpy.run_path(str(REPO / "experiments" / "cats_vs_dogs_cnn.py"))["get_config"]()
    config.audio.sample_rate = 0
    validate_config(config)
