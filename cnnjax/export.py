"""`--mode=export`: a finished run's best weights as one `.safetensors` file that a new run
starts from with `--config.init.pretrained=<file>`, as it would from torchvision's weights.

The file is cnnjax's converted format (`cnnjax.pretrained`): the flattened Flax variables,
with the architecture, input channels and class count in its metadata, and beside them what
the network was trained to see (the audio and window settings, the class names, the run and
step), so that a run starting from it can say when its own input differs. A run with
torchvision's own classifier (`model.head='plain'`) exports the whole network; one with
another head exports the body alone (the head was built for that run's task).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cnnjax.errors import ConfigError
from cnnjax.predict import load_best
from cnnjax.pretrained.porting import LAYOUTS, write_converted
from cnnjax.train.warm_start import input_settings


def export_weights(config: Any, workdir: str | Path, out: str | Path) -> Path:
    """Writes the best checkpoint of the run in `workdir` (trained with `config`) to `out`
    and returns its path."""
    arch = config.model.name
    if arch not in LAYOUTS:
        raise ConfigError(f"--mode=export writes the networks that config.init.pretrained "
                          f"loads ({', '.join(LAYOUTS)}), not {arch!r}.")
    if config.model.features_at:
        raise ConfigError(f"--mode=export needs the whole network; this run's model is cut "
                          f"at {config.model.features_at!r}.")
    workdir = Path(workdir)
    input_shape = (*config.data.image_size, config.data.channels)
    _, variables, class_names, step, _ = load_best(config, workdir, input_shape)
    if config.model.head != "plain":
        variables = {name: {module: value for module, value in tree.items()
                            if module != "head"}
                     for name, tree in variables.items()}
    metadata = {"source": f"cnnjax run {workdir.resolve().name}, step {step}",
                "class_names": json.dumps(class_names),
                "input": json.dumps(input_settings(config))}
    write_converted(out, variables, arch, metadata)
    return Path(out)
