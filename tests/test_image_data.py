"""Image data: the image_folder TFDS build on images written here (bad ones included), TFDS'
cats_vs_dogs read from a prepared copy, the synthetic cats and dogs, splits, normalisation,
evaluation batches, exact resumption, and an image experiment end to end."""

import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from tensorflow_datasets.image_classification import cats_vs_dogs

from conftest import REPO
from readback import (CURVES_SIZE, TOP_LOSS_COLUMNS, TRAIN, VALIDATION, assert_confusion_png,
                      assert_top_losses_match, count_colour, read_csv, read_png)

from cnnjax.config import validate_config
from cnnjax.data import get_datasets
from cnnjax.data.image_datasets import load_images
from cnnjax.data.image_pipeline import ImageSource, normalize
from cnnjax.data.synthetic_images import SyntheticImageSettings, write_image_folder
from cnnjax.errors import ConfigError, DataError
from experiments import cats_vs_dogs_augment, cats_vs_dogs_cnn

SIZE = (12, 16)


def image_config(tmp_path, source_dir="", **data):
    config = cats_vs_dogs_augment.get_config()
    config.data.update({"name": "image_folder", "manual_dir": str(source_dir),
                        "data_dir": str(tmp_path / "cache"), "image_size": SIZE, **data})
    config.batch_size, config.eval_batch_size = 4, 8
    return config


def solid(path, colour, size=(20, 30), mode="RGB", **save):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size[::-1], colour).save(path, **save)


def quiet(_message):
    pass


def test_every_format_is_read_and_every_bad_file_counted_by_name(tmp_path):
    src = tmp_path / "src"
    solid(src / "cat" / "red.jpg", (255, 0, 0), quality=100)
    solid(src / "cat" / "green.png", (0, 255, 0))
    solid(src / "cat" / "blue.bmp", (0, 0, 255))
    solid(src / "cat" / "grey.png", 128, mode="L")
    solid(src / "cat" / "sub" / "nested.webp", (0, 255, 0), lossless=True)
    solid(src / "dog" / "palette.gif", (255, 0, 0), mode="RGB")
    solid(src / "dog" / "alpha.png", (0, 0, 255, 255), mode="RGBA")
    frames = [Image.new("RGB", (30, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(src / "dog" / "animated.gif", save_all=True, append_images=frames[1:])
    good = (src / "cat" / "red.jpg").read_bytes()
    (src / "dog" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (src / "dog" / "text.jpg").write_text("not an image, despite its name\n")
    (src / "dog" / "empty.png").write_bytes(b"")
    (src / "dog" / "Thumbs.db").write_bytes(b"\x00" * 16)
    solid(src / "stray.png", (9, 9, 9))
    solid(src / "bird" / "tweet.png", (1, 2, 3))

    messages = []
    images = load_images(image_config(tmp_path, src, classes=("cat", "dog")).data,
                         tmp_path / "cache", log=messages.append)
    assert images.class_names == ("cat", "dog")
    assert images.file_names == sorted(["cat/red.jpg", "cat/green.png", "cat/blue.bmp",
                                        "cat/grey.png", "cat/sub/nested.webp",
                                        "dog/palette.gif", "dog/alpha.png",
                                        "dog/animated.gif"])
    skipped = dict(Counter(reason for reason, _ in images.summary["skipped"]))
    assert skipped == {"truncated or corrupt": 1, "not an image": 1, "empty": 1,
                       "not an image file name": 1, "outside a class folder": 1,
                       "unknown label": 1}
    text = images.summary["text"]
    assert text.startswith("8 examples; skipped 6 (") and "1 truncated or corrupt: " \
        "dog/truncated.jpg" in text and "1 not an image: dog/text.jpg" in text
    assert "kept but flagged: 1 animated: first frame used: dog/animated.gif" in text
    assert messages[-1] == text
    on_disk = json.loads(next((tmp_path / "cache" / "tfds").rglob("build_summary.json"))
                         .read_text())
    assert on_disk["text"] == text

    source = ImageSource(images.builder_dir, images.positions, images.labels)
    assert all(source[i]["image"].shape == (*SIZE, 3) and source[i]["image"].dtype == np.uint8
               for i in range(len(source)))
    expected = {"cat/red.jpg": (255, 0, 0), "cat/green.png": (0, 255, 0),
                "cat/blue.bmp": (0, 0, 255), "cat/grey.png": (128, 128, 128),
                "cat/sub/nested.webp": (0, 255, 0), "dog/palette.gif": (255, 0, 0),
                "dog/alpha.png": (0, 0, 255), "dog/animated.gif": (255, 0, 0)}
    for i, name in enumerate(images.file_names):
        np.testing.assert_allclose(source[i]["image"].reshape(-1, 3).mean(0), expected[name],
                                   atol=3)


def test_the_build_happens_once_and_a_changed_folder_or_size_builds_anew(tmp_path):
    src = tmp_path / "src"
    solid(src / "a" / "1.png", (10, 20, 30))
    solid(src / "b" / "2.png", (30, 20, 10))
    messages = []
    data = image_config(tmp_path, src).data
    load_images(data, tmp_path / "cache", log=messages.append)
    load_images(data, tmp_path / "cache", log=messages.append)
    assert sum(m.startswith("building") for m in messages) == 1
    solid(src / "b" / "3.png", (0, 0, 0))
    assert load_images(data, tmp_path / "cache", log=messages.append).file_names == [
        "a/1.png", "b/2.png", "b/3.png"]
    data.image_size = (8, 8)
    load_images(data, tmp_path / "cache", log=messages.append)
    assert sum(m.startswith("building") for m in messages) == 3


def test_folders_without_usable_images_say_so(tmp_path):
    (tmp_path / "src" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images in class folders"):
        load_images(image_config(tmp_path, tmp_path / "src").data, tmp_path / "cache", quiet)
    (tmp_path / "src" / "a" / "x.png").write_text("not an image")
    with pytest.raises(DataError, match=r"no readable images .*\(1 not an image: a/x.png\)"):
        load_images(image_config(tmp_path, tmp_path / "src").data, tmp_path / "cache", quiet)
    with pytest.raises(DataError, match="manual_dir is empty"):
        load_images(image_config(tmp_path).data, tmp_path / "cache", quiet)
    with pytest.raises(DataError, match="is not a folder of images"):
        load_images(image_config(tmp_path, tmp_path / "nowhere").data, tmp_path / "cache",
                    quiet)


def test_cats_vs_dogs_without_a_prepared_copy_names_the_fix(tmp_path):
    config = image_config(tmp_path, name="tfds_cats_vs_dogs")
    with pytest.raises(DataError, match="needs TensorFlow.*--config.data.name=image_folder"):
        get_datasets(config)


class CatsVsDogs(cats_vs_dogs.CatsVsDogs, skip_registration=True):
    """TFDS' cats_vs_dogs builder (same name, version and features), generating from files
    written here instead of downloading and re-encoding the Microsoft zip with TensorFlow."""

    def __init__(self, *, images, **kwargs):
        self.images = images
        super().__init__(**kwargs)

    def _split_generators(self, dl_manager):
        return {"train": self._local()}

    def _local(self):
        for path, label in self.images:
            name = f"PetImages/{label.title()}/{path.name}"
            yield name, {"image": path, "image/filename": name, "label": label}


def test_a_prepared_cats_vs_dogs_copy_is_read_without_tensorflow(tmp_path):
    colours = {"cat": (255, 0, 0), "dog": (0, 0, 255)}
    images = []
    for i in range(6):
        label = "cat" if i % 3 else "dog"
        solid(tmp_path / "zip" / f"{i}.jpg", colours[label], quality=100)
        images.append((tmp_path / "zip" / f"{i}.jpg", label))
    CatsVsDogs(images=images, data_dir=str(tmp_path / "cache" / "tfds"),
               file_format="array_record").download_and_prepare()
    config = image_config(tmp_path, name="tfds_cats_vs_dogs", val_fraction=0.5)
    config.batch_size = 2
    datasets = get_datasets(config)
    assert datasets.class_names == ("cat", "dog")
    assert Counter(datasets.train.labels.tolist()) == Counter(datasets.val.labels.tolist()) \
        == {0: 2, 1: 1}
    assert set(datasets.val_file_names) <= {f"{label}/{path.name}" for path, label in images}
    for i, name in enumerate(datasets.val_file_names):
        np.testing.assert_allclose(datasets.val[i]["image"].reshape(-1, 3).mean(0),
                                   colours[name.split("/")[0]], atol=3)


def test_image_configs_are_checked_before_any_data(tmp_path):
    config = image_config(tmp_path, normalization="db")
    with pytest.raises(ConfigError, match="normalization='db' is not valid for images"):
        validate_config(config)
    config = image_config(tmp_path, tmp_path, channels=1)
    config.model.in_channels = 1
    with pytest.raises(ConfigError, match="channels=1: images are read as RGB"):
        get_datasets(config)
    config = image_config(tmp_path, tmp_path, sampling="by_group")
    with pytest.raises(ConfigError, match="images have none"):
        get_datasets(config)


def test_synthetic_images_are_written_once_and_identically(tmp_path):
    settings = SyntheticImageSettings(num_per_class=(("cat", 6), ("dog", 4)), seed=3)
    first = write_image_folder(settings, tmp_path / "a")
    again = write_image_folder(settings, tmp_path / "a")
    other = write_image_folder(settings, tmp_path / "b")
    assert first == again
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert Counter(p.parts[0] for p in files if len(p.parts) == 2) == {"cat": 6, "dog": 4}
    for relative in files:
        assert (first / relative).read_bytes() == (other / relative).read_bytes()
    assert write_image_folder(SyntheticImageSettings(num_per_class=(("cat", 6), ("dog", 4)),
                                                     seed=4), tmp_path / "a") != first


def test_normalisations_of_a_known_pixel():
    pixel = np.array([[[51.0, 102.0, 204.0]]], np.float32)
    np.testing.assert_allclose(normalize(pixel, "rescale")[0, 0], [0.2, 0.4, 0.8], rtol=1e-6)
    np.testing.assert_allclose(normalize(pixel, "imagenet")[0, 0],
                               (np.array([0.2, 0.4, 0.8]) - [0.485, 0.456, 0.406])
                               / [0.229, 0.224, 0.225], rtol=1e-5)


@pytest.fixture
def synthetic_datasets(tmp_path):
    config = image_config(tmp_path, name="synthetic_images", val_fraction=0.3)
    config.data.synthetic_images.num_per_class = (("cat", 10), ("dog", 7))
    config.data.synthetic_images.update(min_side=30, max_side=60)
    validate_config(config)
    return config, get_datasets(config)


def test_split_is_stratified_and_evaluation_sees_every_image_once(synthetic_datasets):
    config, datasets = synthetic_datasets
    assert datasets.class_names == ("cat", "dog") and datasets.input_shape == (*SIZE, 3)
    assert len(datasets.train) + len(datasets.val) == 17
    assert Counter(datasets.val.labels.tolist()) == {0: 3, 1: 2}
    batches = list(datasets.eval_batches())
    assert [b["image"].shape for b in batches] == [(8, *SIZE, 3)]
    (batch,) = batches
    assert batch["mask"].tolist() == [True] * 5 + [False] * 3
    np.testing.assert_array_equal(batch["record"][:5], np.arange(5))
    np.testing.assert_array_equal(batch["label"][:5], datasets.val.labels)
    np.testing.assert_allclose(batch["image"][2], datasets.val[2]["image"] / 255.0, rtol=1e-6)
    assert not batch["image"][5:].any()


def test_training_batches_resume_mid_epoch_exactly_with_augmentation(synthetic_datasets):
    config, datasets = synthetic_datasets
    assert datasets.augment.zoom_range == 0.2 and datasets.augment.shear_range == 0.2
    uninterrupted = [(b["image"].copy(), b["label"].copy()) for b in datasets.train_batches(2)]
    assert len(uninterrupted) == datasets.steps_per_epoch == 3
    iterator = datasets.train_batches(2)
    next(iterator)
    state = iterator.get_state()
    rest = [(b["image"], b["label"]) for b in datasets.train_batches(2, state)]
    assert len(rest) == 2
    for (a, la), (b, lb) in zip(rest, uninterrupted[1:]):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    other_epoch = next(iter(datasets.train_batches(3)))["image"]
    assert not np.array_equal(other_epoch, uninterrupted[0][0])
    # Augmented: no training image is its stored pixels scaled, as evaluation's are.
    stored = {datasets.train[i]["image"].tobytes() for i in range(len(datasets.train))}
    assert not any(np.round(x * 255).astype(np.uint8).tobytes() in stored
                   for x in uninterrupted[0][0])


def test_the_plain_experiment_feeds_stored_pixels_unchanged(tmp_path):
    config = cats_vs_dogs_cnn.get_config()
    assert config.augment.zoom_range == 0 and config.model.name == "simple_cnn"
    config.data.update(data_dir=str(tmp_path / "cache"), image_size=SIZE)
    config.data.synthetic_images.num_per_class = (("cat", 4), ("dog", 4))
    config.data.synthetic_images.update(min_side=30, max_side=40)
    config.batch_size = 2
    datasets = get_datasets(config)
    stored = {datasets.train[i]["image"].tobytes() for i in range(len(datasets.train))}
    for batch in datasets.train_batches(1):
        for x in batch["image"]:
            assert np.round(x * 255).astype(np.uint8).tobytes() in stored


TINY_IMAGES = ["--config=experiments/cats_vs_dogs_augment.py", "--config.num_epochs=2",
               "--config.data.workers=1", "--config.batch_size=4", "--config.eval_batch_size=8",
               "--config.data.image_size=(32,32)",
               "--config.data.synthetic_images.num_per_class=(('cat',8),('dog',8))",
               "--config.data.synthetic_images.min_side=32",
               "--config.data.synthetic_images.max_side=48",
               "--config.model.widths=(4,8)", "--config.model.dense=(16,)"]


def run_main(*args, data_dir):
    env = dict(os.environ, CNNJAX_DATA_DIR=str(data_dir), PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "cnnjax.main", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_the_augmented_image_experiment_runs_end_to_end_and_resumes(tmp_path):
    workdir = tmp_path / "run"
    result = run_main(f"--workdir={workdir}", *TINY_IMAGES, data_dir=tmp_path / "data")
    assert result.returncode == 0, result.stderr
    assert "12 train / 4 validation examples, classes ['cat', 'dog'], input (32, 32, 3)" \
        in result.stderr
    epochs = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2]
    report = json.loads((workdir / "report.json").read_text())
    assert report["class_names"] == ["cat", "dog"] and report["num_examples"] == 4
    assert report["accuracy"] == pytest.approx(epochs[-1]["val_accuracy"])
    assert_confusion_png(workdir / "confusion_matrix.png", report["confusion_matrix"])
    curves = read_png(workdir / "curves.png", CURVES_SIZE)
    assert count_colour(curves, TRAIN) > 0 and count_colour(curves, VALIDATION) > 0
    assert_top_losses_match(workdir / "top_losses.csv", report)
    for row in read_csv(workdir / "top_losses.csv", TOP_LOSS_COLUMNS):
        assert row["file"].startswith(f"{row['actual']}/"), row  # the image's class folder
    again = run_main(f"--workdir={workdir}", *TINY_IMAGES, data_dir=tmp_path / "data")
    assert again.returncode == 0, again.stderr
    assert "resuming from the checkpoint at step 6 (2 epochs done)" in again.stderr
    assert "building" not in again.stderr
