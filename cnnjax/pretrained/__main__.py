"""Command line: convert torchvision/timm weights once into a file cnnjax reads without torch.

    python -m cnnjax.pretrained convert resnet34-b627a593.pth resnet34-b627a593.cnnjax.safetensors
    python -m cnnjax.pretrained convert torchvision:resnet34 OUT.safetensors --arch resnet34
"""

from __future__ import annotations

import argparse
import sys

from cnnjax.pretrained.errors import WeightsError
from cnnjax.pretrained.porting import ARCHS, convert


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cnnjax.pretrained", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    conv = commands.add_parser("convert", help="write a .safetensors file of the Flax variables")
    conv.add_argument("source", help=".pth/.pt/.safetensors/.npz file or torchvision:<arch>")
    conv.add_argument("out", help="the converted file to write; must end in .safetensors")
    conv.add_argument("--arch", choices=ARCHS, help="default: told from the file's keys")
    conv.add_argument("--num-classes", type=int, default=None,
                      help="default: the file's; another value stores a fresh classifier")
    conv.add_argument("--in-channels", type=int, default=3,
                      help="1 stores the RGB stem summed over its input channels")
    args = parser.parse_args(argv)
    try:
        arch = convert(args.source, args.out, args.arch, num_classes=args.num_classes,
                       in_channels=args.in_channels)
    except WeightsError as error:
        print(f"cnnjax.pretrained: error: {error}", file=sys.stderr, flush=True)
        return 1
    print(f"cnnjax.pretrained: wrote {arch} weights to {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
