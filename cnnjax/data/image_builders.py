"""TFDS builder for a user's images: `image_folder`, one sub-folder per class, any format PIL
reads. It writes `array_record` files read back with `tfds.data_source` (no TensorFlow).

Images are stored decoded, as RGB uint8 arrays already resized to `config.data.image_size`,
not as their encoded bytes. Every image has to be decoded in full once anyway to find the
truncated and corrupt ones (a header check misses them), so keeping the decoded result costs
the build nothing, and it spares every later epoch a decode and resize per image (8 ms for a
500x375 JPEG on a 2-core CPU, more than a GPU's train step takes per image). The price is
one build per image size (the size is part of the build's folder) and records of H*W*3
bytes, 67 KB at 150x150.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnjax.data.builders import SUMMARY_FILE, prepare
from cnnjax.data.index import Entry, Index, class_folder_files
from cnnjax.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                  ".pgm", ".pbm")
RECORDS_FILE = "records.json"


class ImageError(Exception):
    """An image file that cannot be used; `reason` is what the build summary counts."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def read_image(data: bytes, size: tuple[int, int]) -> tuple[np.ndarray, list[str]]:
    """`[H, W, 3]` uint8 RGB of an encoded image resized to `size` (H, W), bilinear with
    antialiasing, turned upright by its EXIF orientation; and what is worth flagging about
    it. Raises ImageError('empty' | 'not an image' | 'too large' | 'truncated or corrupt').
    """
    if not data:
        raise ImageError("empty")
    flags = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL's notes on odd EXIF or palettes, not errors
        try:
            with Image.open(io.BytesIO(data)) as image:
                if getattr(image, "n_frames", 1) > 1:
                    flags.append("animated: first frame used")
                image.load()  # decodes everything: a truncated file fails here
                upright = ImageOps.exif_transpose(image)
                rgb = upright.convert("RGBA" if upright.mode == "P" else upright.mode)
                rgb = rgb.convert("RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
                return np.asarray(rgb, np.uint8), flags
        except UnidentifiedImageError:
            raise ImageError("not an image") from None
        except Image.DecompressionBombError:
            raise ImageError("too large") from None
        except Exception:  # PIL's decoders signal bad data with many exception types
            raise ImageError("truncated or corrupt") from None


def image_folder_index(root: str | Path, classes: Sequence[str] = ()) -> Index:
    """The images under `root`, one sub-folder per class (nested folders inside a class
    belong to it). `classes` fixes the class list (other folders are skipped as unknown);
    empty means every folder that holds images, sorted. Files without an image suffix
    inside class folders (Thumbs.db, notes), links that lead out of `root` and images lying
    outside any class folder are skipped and counted."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root} is not a folder of images; config.data.manual_dir must name "
                        f"a folder with one sub-folder per class.")
    rows, skipped = class_folder_files(root, IMAGE_SUFFIXES, "an image")
    found = sorted({label for _, label in rows})
    index = Index([], tuple(classes) if classes else tuple(found), skipped)
    for path, label in rows:
        name = path.relative_to(root).as_posix()
        if label not in index.class_names:
            index.skip("unknown label", name)
        else:
            index.entries.append(Entry(path, name, label, group=name))
    if not index.entries:
        raise DataError(f"{root} holds no images in class folders (skipped "
                        f"{len(index.skipped)}); expected one sub-folder per class holding "
                        f"{', '.join(IMAGE_SUFFIXES)} files.")
    return index


class ImageFolder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A user's images, one sub-folder per class, stored decoded as RGB uint8 arrays of one
    size (see the module's docstring for why); unreadable images are skipped and counted
    in the index, with their reason."""
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "RGB uint8 images resized to the build's size, label, file name."}

    def __init__(self, *, index: Index, image_size: tuple[int, int], **kwargs: Any):
        self.index, self.image_size = index, (int(image_size[0]), int(image_size[1]))
        self.num_yielded = 0
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(*self.image_size, 3), dtype=np.uint8),
                "label": tfds.features.ClassLabel(names=list(self.index.class_names)),
                "file_name": tfds.features.Text(),
            }),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager
                          ) -> dict[str, Iterator[tuple[str, dict[str, Any]]]]:
        return {"labelled": self._generate_examples()}

    def _generate_examples(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for entry in self.index.entries:
            try:
                image, flags = read_image(entry.path.read_bytes(), self.image_size)
            except ImageError as error:
                self.index.skip(error.reason, entry.file_name)
                continue
            except OSError:
                self.index.skip("cannot be opened", entry.file_name)
                continue
            for flag in flags:
                self.index.flag(flag, entry.file_name)
            self.num_yielded += 1
            yield entry.file_name, {"image": image, "label": entry.label,
                                    "file_name": entry.file_name}


def build_images(index: Index, image_size: tuple[int, int], data_dir: Path, *,
                 log: Callable[[str], None] = print
                 ) -> tuple[tfds.core.DatasetBuilder, dict[str, Any], list[tuple[str, int]]]:
    """Builds once into `data_dir` (reused afterwards) and returns the builder, the build
    summary (`build_summary.json` beside the data) and the `(file name, label)` of every
    record in the data source's order (`records.json`), so a run can split the data without
    reading its images. An empty result is an error."""
    builder = ImageFolder(index=index, image_size=image_size, data_dir=str(data_dir),
                          file_format="array_record")
    summary_path = Path(builder.data_dir) / SUMMARY_FILE
    records_path = Path(builder.data_dir) / RECORDS_FILE
    if summary_path.exists():
        return builder, json.loads(summary_path.read_text()), [
            (name, label) for name, label in json.loads(records_path.read_text())]
    log(f"building {builder.name} from {len(index.entries)} images at "
        f"{image_size[0]}x{image_size[1]} into {builder.data_dir} (once)")
    prepare(builder, index, "images")
    listing = builder.as_data_source(split="labelled",
                                     decoders={"image": tfds.decode.SkipDecoding()})
    records = [(r["file_name"].decode(), int(r["label"])) for r in listing]
    summary = {"num_examples": len(records), "class_names": list(index.class_names),
               "skipped": index.skipped, "flagged": index.flagged,
               "text": index.summary(len(records))}
    records_path.write_text(json.dumps(records))
    summary_path.write_text(json.dumps(summary, indent=2))  # last: it marks a finished build
    log(summary["text"])
    return builder, summary, records
