"""torchvision/timm ResNet and torchvision InceptionV3 weights in cnnjax: exact ports, safe
file reading, offline use.

    from cnnjax.pretrained import load_torchvision
    variables = load_torchvision("torchvision:resnet34", "resnet34", num_classes=3, in_channels=1)

    files     reading .pth / .safetensors files safely
    locate    finding or downloading official files, converted file names
    porting   torchvision/timm names and layouts -> `cnnjax.models` variables

It sits on `cnnjax.models` only. Importing this package never imports torch (only reading a
`.pth` file does), nor the data stack.
"""

# The input normalization torchvision's weights expect (data.normalization='imagenet').
from cnnjax.imagenet import IMAGENET_MEAN, IMAGENET_STD
from cnnjax.pretrained.errors import WeightsError
from cnnjax.pretrained.files import read_metadata, read_weights
from cnnjax.pretrained.locate import OFFICIAL_FILES, converted_file_name, resolve_weights
from cnnjax.pretrained.porting import (ARCHS, convert, flatten_variables, guess_arch,
                                       load_converted, load_torchvision, modules_after,
                                       torch_name)

__all__ = ["ARCHS", "IMAGENET_MEAN", "IMAGENET_STD", "OFFICIAL_FILES", "WeightsError",
           "convert", "converted_file_name", "flatten_variables", "guess_arch",
           "load_converted", "load_torchvision", "modules_after", "read_metadata", "read_weights",
           "resolve_weights", "torch_name"]
