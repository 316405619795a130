"""Flax linen CNNs with explicit BatchNorm state, in torchvision's layout where one exists."""

from cnnjax.models.heads import HEADS, FastaiHead
from cnnjax.models.norms import norm_paths
from cnnjax.models.registry import MODELS, get_model
from cnnjax.models.resnet import ResNet, resnet18, resnet34, resnet50
from cnnjax.models.simple_cnn import SimpleCNN

__all__ = ["HEADS", "MODELS", "FastaiHead", "ResNet", "SimpleCNN", "get_model", "norm_paths",
           "resnet18", "resnet34", "resnet50"]
