"""torchvision's ImageNet statistics: the per-channel mean and standard deviation its
weights were trained with. Pretrained weights (`cnnjax.pretrained`), InceptionV3's
`transform_input` (`cnnjax.models`) and the input pipelines (`data.normalization='imagenet'`)
all take them from here."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
