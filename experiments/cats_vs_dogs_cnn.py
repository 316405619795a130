"""Cats vs dogs with the classic Keras-tutorial CNN: 3 x (3x3 conv 32/64/128 + ReLU + 2x2 max
pool), flatten, dense 128 and 512 with ReLU, the output layer; 150x150 RGB scaled to [0, 1]
(Keras' `rescale=1/255`), Adam at 1e-3, 15 epochs, no augmentation. `curves.png` plots the
training and validation accuracy and loss per epoch.

The output layer is the tutorial's one sigmoid unit with binary cross-entropy ('dog', the
second class, is the positive one); `--config.loss.name=softmax_cross_entropy` gives two
softmax logits instead.

By default it trains on synthetic 'cats' and 'dogs' (written once into the data directory in
the image_folder layout and read by the real image_folder builder), offline. With your own
photos, one sub-folder per class (e.g. the Microsoft Asirra set's PetImages/Cat, PetImages/Dog):
    ./launch.sh --config=experiments/cats_vs_dogs_cnn.py --workdir=runs/cats_vs_dogs_cnn \\
        --config.data.name=image_folder --config.data.manual_dir=~/data/PetImages

Launch (synthetic data):
    ./launch.sh --config=experiments/cats_vs_dogs_cnn.py --workdir=runs/cats_vs_dogs_cnn

Result (2026-11-23, 2-core AMD EPYC CPU, Python 3.12.1, jax 0.12; the launch command's flags
run as `python -m cnnjax.main`, on the synthetic set, 450 train / 150 validation images, one
sigmoid output; synthetic set and build already on disk): 5 min 28 s wall (15 epochs of 14 steps of batch 32, ~20 s each);
validation accuracy 0.793 after the last epoch (0.793 at epoch 9 too), balanced accuracy
0.793, macro-F1 0.793. The network overfits as the tutorial's does: training accuracy 0.96
and a validation loss rising from 0.47 (epoch 8) to 0.77. With two softmax logits instead
(`--config.loss.name=softmax_cross_entropy`), measured the same day on the machine shared
with other jobs: validation accuracy 0.793 after epoch 15 (best 0.820, epoch 13), training
accuracy 0.95, 16 min 30 s wall including writing and building the synthetic set.
"""

import ml_collections

from cnnjax.configs import base


def get_config() -> ml_collections.ConfigDict:
    config = base.get_config()
    config.num_epochs = 15
    config.batch_size = 32
    config.eval_batch_size = 64

    config.data.name = "synthetic_images"  # | 'image_folder' (manual_dir) | 'tfds_cats_vs_dogs'
    config.data.val_fraction = 0.25
    config.data.image_size = (150, 150)  # every image is resized to this once, when built
    config.data.channels = 3
    config.data.normalization = "rescale"  # x / 255 | 'imagenet' (mean/std, for pretrained)

    config.model.name = "simple_cnn"  # the base config's simple_cnn fields: the tutorial's
    config.model.in_channels = 3

    config.loss.name = "binary_cross_entropy"  # one sigmoid output, as in the tutorial

    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.schedule = "constant"
    return config
