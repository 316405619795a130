"""Default experiment (the base config's values, cnnjax/configs/base.py, which also documents
every field): ResNet-18 from scratch on synthetic heart sounds, offline, on a laptop.

The synthetic set (normal / murmur / extrastole, PASCAL set_b's layout and naming) is written
once into the data directory and read with the same code as the real recordings; 4-second
log-mel windows become 128x128 single-channel images; Adam with a one-cycle schedule.

Launch:
    ./launch.sh                       # same as --config=experiments/heartbeat_synthetic.py
    ./launch.sh --config.num_epochs=3 --workdir=runs/quick

Result (2026-11-30, 2-core Intel Xeon CPU, Python 3.12.1, jax 0.12, the shipped XLA flags,
environment installed, every cache empty: data, features, XLA compile cache, numba's):
validation accuracy 0.989 (89/90), balanced accuracy 0.981, macro-F1 0.987 after 10 epochs
(130 steps of batch 16, every 4 s window of the 90 validation recordings evaluated each
epoch), 84 s wall for the whole launch (`cnnjax: done in 81.7 s`). Measured with
    CNNJAX_DATA_DIR=<empty> JAX_COMPILATION_CACHE_DIR=<empty> NUMBA_CACHE_DIR=<empty> \
        ./launch.sh --workdir=<empty>
That was the code before the convolution barriers (cnnjax.models.layers). The same command
on the current code, same machine, 2 1/2 hours later: 154 s, the same accuracy (0.989, 0.981,
0.987), over the 120 s aimed for; the machine itself ran slower then (librosa's log-mels 86
recordings/s against 150 in the first run, the train steps 1.1 against ~2 per second), so
the two times do not compare the code. Again on 2026-11-30 at 08:25 (float32 matmul 240
GFLOP/s against 305 the day before): 164 s wall (`done in 154.0 s`), the same accuracy.
Where it went: ~87 s in the 130 train steps (0.65-0.68 s each, `python -m benchmarks.run
--sizes 128 --only resnet18`), ~15 s evaluating, the rest start-up, the data build, the
log-mels (numba's first compile included) and the first compiles; still over 120 s.
Again on 2026-11-30 at 14:30 (same machine, the current code, the same command, every cache
empty; `python -m benchmarks.run --sizes 128 --only resnet18 --torch` just before: 389 ms a
train step, 0.96x PyTorch's): 102 s wall (`done in 98.1 s`), the same accuracy (0.989,
0.981, 0.987); 5 s to the first step, epochs of 6.5-7.4 s (13 steps and the evaluation of
90 recordings, ~1.3 s), 11.4 s for the first (its compiles); with warm caches 90 s.
Under 120 s when the machine runs at its own pace; over it at the slow hours above.
The last measurement before (2026-11-23, 2-core AMD EPYC) took 2 min 33 s, accuracy 0.989.
"""

import ml_collections

from cnnjax.configs import base


def get_config() -> ml_collections.ConfigDict:
    return base.get_config()
