"""Flax linen CNNs with explicit BatchNorm state, in torchvision's layout where one exists.

    layers, norms   torch-style conv/dense/BatchNorm, pooling kinds, frozen norms
    resnet, inception, simple_cnn, heads   the networks and their classifier heads
    registry        get_model(config.model)

The bottom layer: it imports flax and `cnnjax.errors`/`cnnjax.imagenet` only, so
`from cnnjax.models import resnet34` loads neither the data stack nor training.
"""

from cnnjax.models.heads import HEADS, DenseHead, FastaiHead
from cnnjax.models.inception import InceptionV3, inception_v3
from cnnjax.models.norms import norm_paths
from cnnjax.models.registry import MODELS, get_model
from cnnjax.models.resnet import ResNet, resnet18, resnet34, resnet50
from cnnjax.models.simple_cnn import SimpleCNN

__all__ = ["HEADS", "MODELS", "DenseHead", "FastaiHead", "InceptionV3", "ResNet", "SimpleCNN",
           "get_model", "inception_v3", "norm_paths", "resnet18", "resnet34", "resnet50"]
