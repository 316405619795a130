"""Synthetic 'cat' and 'dog' photos for the offline image experiments and tests.

Each image is a cartoon head on a cluttered background. A cat's ears are triangles pointing
up and its fur is striped; a dog's ears are long ellipses hanging down beside its head and
its fur is spotted. The patterns' shade varies and one head in six is plain, so the ears'
shape is the one cue that is always there. Everything else is drawn from the same
distributions for both classes (colours, head size, position and tilt, eyes, background
gradient, distractor shapes, noise, image size and aspect ratio, file format).
`write_image_folder` writes the set in the image_folder layout, so the default image
experiments go through the real builder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from cnnjax.audio.synth import publish_folder, staging_folder
from cnnjax.progress import progress_bar

CLASSES = ("cat", "dog")
# File formats with their share of the images: mostly JPEG, as photo folders are.
FORMATS = ((".jpg", 0.7), (".png", 0.15), (".webp", 0.05), (".bmp", 0.05), (".gif", 0.05))
LAYOUT = 1  # what a written folder holds; a new layout gets new folders


@dataclass(frozen=True)
class SyntheticImageSettings:
    """Everything that determines a synthetic image set; its hash names the folder."""
    num_per_class: tuple[tuple[str, int], ...] = (("cat", 300), ("dog", 300))
    min_side: int = 100  # each image's height and width are drawn from [min_side, max_side]
    max_side: int = 220
    seed: int = 0

    def fingerprint(self) -> str:
        fields = {**asdict(self), "layout": LAYOUT}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def _background(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """A two-colour gradient at a random angle with blurred blotches and distractors."""
    a, b = np.array(_colour(rng), float), np.array(_colour(rng), float)
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:height, 0:width]
    t = (np.cos(angle) * x / width + np.sin(angle) * y / height)
    t = (t - t.min()) / max(np.ptp(t), 1e-6)
    pixels = a + t[..., None] * (b - a)
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    side = min(height, width)
    for _ in range(int(rng.integers(1, 6))):  # class-neutral clutter: lines, boxes, dots
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        x1, y1 = x0 + rng.uniform(-0.4, 0.4) * side, y0 + rng.uniform(-0.4, 0.4) * side
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.line([x0, y0, x1, y1], fill=_colour(rng), width=int(rng.integers(1, 5)))
        elif kind == 1:
            draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)],
                           fill=_colour(rng))
        else:
            r = rng.uniform(0.02, 0.08) * side
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=_colour(rng))
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 2)))


def _fur_pattern(rng: np.random.Generator, label: str, canvas: Image.Image,
                 head: tuple[float, float, float, float], fur: tuple[int, int, int]) -> None:
    """Stripes on a cat's head, spots on a dog's, a darker or lighter shade of its fur; one
    head in six is plain, so the ears stay necessary."""
    if rng.random() < 1 / 6:
        return
    cx, cy, rx, ry = head
    side = canvas.size[0]
    pattern = Image.new("L", canvas.size, 0)
    draw = ImageDraw.Draw(pattern)
    if label == "cat":
        width = int(rng.integers(2, max(3, int(rx / 4))))
        for offset in np.arange(-2 * rx, 2 * rx, width * rng.uniform(2.0, 3.5)):
            draw.line([cx + offset - rx, cy - 2 * ry, cx + offset + rx, cy + 2 * ry],
                      fill=255, width=width)
        pattern = pattern.rotate(rng.uniform(0, 180))
    else:
        for _ in range(int(rng.integers(3, 9))):
            x, y = cx + rng.uniform(-rx, rx), cy + rng.uniform(-ry, ry)
            r = rx * rng.uniform(0.1, 0.3)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
    inside = Image.new("L", canvas.size, 0)
    ImageDraw.Draw(inside).ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    mask = np.asarray(pattern, np.float32) * np.asarray(inside, np.float32) / 255
    shade = np.array(fur, float) * rng.uniform(0.2, 0.5) if rng.random() < 0.5 else \
        255 - (255 - np.array(fur, float)) * rng.uniform(0.2, 0.5)
    colour = Image.new("RGBA", (side, side), tuple(int(v) for v in shade))
    canvas.paste(colour, (0, 0), Image.fromarray(mask.astype(np.uint8)))


def _head(rng: np.random.Generator, label: str, side: int) -> Image.Image:
    """The animal on a transparent square canvas of `side` pixels, upright."""
    canvas = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    fur = _colour(rng)
    c, r = side / 2, side * 0.28
    rx, ry = r * rng.uniform(0.85, 1.15), r * rng.uniform(0.85, 1.15)
    for sign in (-1, 1):  # ears first, so the head overlaps their base
        if label == "cat":
            base = c + sign * rx * rng.uniform(0.35, 0.75)
            tip = (base + sign * rx * rng.uniform(0.0, 0.35), c - ry - r * rng.uniform(0.5, 0.9))
            half = r * rng.uniform(0.25, 0.4)
            draw.polygon([(base - half, c - ry * 0.6), (base + half, c - ry * 0.6), tip],
                         fill=fur)
        else:
            ex, ey = c + sign * rx * rng.uniform(0.8, 1.05), c + ry * rng.uniform(0.0, 0.4)
            w, h = r * rng.uniform(0.2, 0.35), r * rng.uniform(0.6, 0.9)
            draw.ellipse([ex - w, ey - h, ex + w, ey + h], fill=fur)
    draw.ellipse([c - rx, c - ry, c + rx, c + ry], fill=fur)
    _fur_pattern(rng, label, canvas, (c, c, rx, ry), fur)
    eye, spread, height = _colour(rng), rx * rng.uniform(0.3, 0.5), c - ry * rng.uniform(0, 0.3)
    size = r * rng.uniform(0.08, 0.16)
    for sign in (-1, 1):
        x = c + sign * spread
        draw.ellipse([x - size, height - size, x + size, height + size], fill=eye)
    nose = r * rng.uniform(0.06, 0.12)
    draw.ellipse([c - nose, c + ry * 0.3 - nose, c + nose, c + ry * 0.3 + nose], fill=eye)
    return canvas


def draw_image(label: str, rng: np.random.Generator, min_side: int = 100,
               max_side: int = 220) -> Image.Image:
    """One synthetic RGB photo of a 'cat' or a 'dog' (`CLASSES`)."""
    if label not in CLASSES:
        raise ValueError(f"label must be one of {CLASSES}, got {label!r}.")
    height, width = (int(v) for v in rng.integers(min_side, max_side + 1, 2))
    image = _background(rng, height, width)
    # The head fills much of the frame, near its centre, as a pet does in a pet photo.
    side = int(min(height, width) * rng.uniform(0.6, 1.0))
    head = _head(rng, label, side).rotate(rng.uniform(-30, 30), Image.Resampling.BILINEAR)
    x = int((width - side) / 2 + rng.uniform(-0.15, 0.15) * width)
    y = int((height - side) / 2 + rng.uniform(-0.15, 0.15) * height)
    image.paste(head, (x, y), head)
    pixels = np.asarray(image, np.float32)
    pixels += rng.normal(0, rng.uniform(3, 12), pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_image_folder(settings: SyntheticImageSettings, root: str | Path) -> Path:
    """Writes the set once into `<root>/synthetic_images-<fingerprint>/` (`cat/`, `dog/`
    sub-folders of numbered files in mixed formats) and returns it; a folder that already
    holds a finished set for the same settings is reused."""
    root = Path(root)
    folder = root / f"synthetic_images-{settings.fingerprint()}"
    if (folder / "synth_settings.json").exists():
        return folder
    staging = staging_folder(folder)
    rng = np.random.default_rng(settings.seed)
    suffixes, shares = zip(*FORMATS)
    total = sum(count for _, count in settings.num_per_class)
    with progress_bar(total, "writing synthetic images", "image") as bar:
        for label, count in settings.num_per_class:
            (staging / label).mkdir(parents=True)
            for i in range(count):
                image = draw_image(label, rng, settings.min_side, settings.max_side)
                suffix = suffixes[int(rng.choice(len(suffixes), p=shares))]
                options = {"quality": int(rng.integers(60, 96))} \
                    if suffix in (".jpg", ".webp") else {}
                image.save(staging / label / f"{i:05d}{suffix}", **options)
                bar.update()
    return publish_folder(staging, folder, asdict(settings))
