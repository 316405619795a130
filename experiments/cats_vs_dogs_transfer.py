"""Cats vs dogs by transfer learning, as Keras' transfer tutorial does it: ImageNet-pretrained
InceptionV3 cut after `Mixed_6e` (Keras' `mixed7`; 7x7x768 features at 150x150), flatten,
dense 1024 + ReLU, dropout 0.2, one sigmoid output with binary cross-entropy; the backbone
frozen (its BatchNorm statistics too, as a frozen Keras model runs in inference mode); Adam at
1e-4; inputs normalised with ImageNet's mean and std (InceptionV3's `transform_input` then
maps them to the [-1, 1] its weights were trained on); augmentation as cats_vs_dogs_augment.py.

Needs torchvision's `inception_v3_google-0cc3c7bd.pth` (README: "Pretrained weights").
A ResNet works as well: `--config.model.name=resnet34 --config.model.features_at=layer3
--config.init.pretrained=torchvision:resnet34`.

Launch (synthetic data; your own photos as in cats_vs_dogs_cnn.py):
    ./launch.sh --config=experiments/cats_vs_dogs_transfer.py --workdir=runs/cats_vs_dogs_transfer

Result (2026-11-23, 2-core AMD EPYC CPU, Python 3.12.1, jax 0.12, synthetic images, 450
train / 150 validation): no ImageNet weights can be fetched on this machine, so only the
plumbing was measured, with `--config.init.pretrained= --config.num_epochs=2`: 139.5 s for
the run (about 80 s per epoch of 28 steps, compile included), and chance accuracy 0.500 (all
'dog'), as a frozen random body with frozen BatchNorm statistics must give (its features are
unnormalised, the loss ~1e5). With the weights in place this is the tutorial's recipe.
"""

import ml_collections

from cnnjax.config import sibling_config


def get_config() -> ml_collections.ConfigDict:
    config = sibling_config(__file__, "cats_vs_dogs_augment")
    config.num_epochs = 10
    config.init.pretrained = "torchvision:inception_v3"
    config.freeze = ("body",)
    config.freeze_norm = "frozen"
    config.data.normalization = "imagenet"

    config.model.name = "inception_v3"
    config.model.features_at = "Mixed_6e"
    config.model.head = "dense"
    config.model.head_hidden = 1024
    config.model.head_dropout = (0.2,)

    config.optimizer.learning_rate = 1e-4
    return config
