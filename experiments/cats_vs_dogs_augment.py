"""Cats vs dogs with the Keras-tutorial CNN and ImageDataGenerator's augmentation: random
width and height shifts of up to 0.2 of the image, shear up to 0.2, zoom in [0.8, 1.2]
(nearest-edge fill), drawn afresh for every image in every epoch; everything else as
`cats_vs_dogs_cnn.py`.

`shear_range` is in degrees, as Keras 2 and later read the tutorial's `shear_range=0.2`:
a shear of at most 0.2 degrees, which moves no pixel of a 150x150 image by more than 0.26
of a pixel. Keras 1 read the same number as radians (about 11.5 degrees); for that
augmentation, add `--config.augment.shear_range=11.5`.

Launch (synthetic data; your own photos as in cats_vs_dogs_cnn.py):
    ./launch.sh --config=experiments/cats_vs_dogs_augment.py --workdir=runs/cats_vs_dogs_augment

Result (2026-11-23, 2-core AMD EPYC CPU, Python 3.12.1, jax 0.12; the launch command's flags
run as `python -m cnnjax.main`, on the synthetic set, 450 train / 150 validation images, one
sigmoid output): 12 min 5 s wall on the CPU shared with other jobs (15 epochs of 14 steps of
batch 32; augmenting adds ~3 ms per image on the host, small beside a step). Validation
accuracy 0.707 after epoch 15 (best 0.793, epoch 14), balanced accuracy 0.707, macro-F1
0.698, training accuracy 0.69: augmentation slows learning, and 15 epochs are too few to
reach the plain network's 0.793. It also stops the overfitting: continued to 30 epochs
(`--config.num_epochs=30` on the same workdir, 6 min 43 s more on the quiet CPU) it reaches
0.813 (best 0.840, epoch 29) with training accuracy 0.85 and a validation loss of 0.42,
where the plain network's rose to 0.77.
"""

import ml_collections

from cnnjax.config import sibling_config


def get_config() -> ml_collections.ConfigDict:
    config = sibling_config(__file__, "cats_vs_dogs_cnn")
    config.augment.width_shift_range = 0.2
    config.augment.height_shift_range = 0.2
    config.augment.shear_range = 0.2
    config.augment.zoom_range = 0.2
    return config
