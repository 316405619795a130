"""The grain pipeline, augmentations and the feature cache."""

import csv

import numpy as np
import pytest
import scipy.stats
import soundfile as sf

from cnnjax.audio.synth import synthesize
from cnnjax.data import (get_datasets, mixup, random_affine, random_filter, random_noise,
                         spec_augment)
from cnnjax.data.feature_cache import FeatureCache
from cnnjax.data.pipeline import (AugmentSettings, ImageSettings, SpectrogramSource,
                                  spectrogram_image, train_loader)
from experiments import heartbeat_synthetic


def toy_source(n=12, frames=40):
    rng = np.random.default_rng(0)
    specs = [rng.uniform(-80, 0, (16, frames + i)).astype(np.float32) for i in range(n)]
    return SpectrogramSource(specs, np.arange(n) % 3)


IMAGE = ImageSettings(crop_frames=24, image_size=(16, 24))
AUGMENT = AugmentSettings(gain_db=6.0, freq_masks=1, freq_mask_width=4, time_masks=1,
                          time_mask_width=5)


def batches(loader_or_iterator):
    return [(b["image"].copy(), b["label"].copy()) for b in loader_or_iterator]


def test_train_epochs_are_shuffled_reproducibly_and_drop_the_remainder():
    source = toy_source()
    epoch1 = batches(train_loader(source, IMAGE, AUGMENT, batch_size=5, seed=0, epoch=1))
    again = batches(train_loader(source, IMAGE, AUGMENT, batch_size=5, seed=0, epoch=1))
    epoch2 = batches(train_loader(source, IMAGE, AUGMENT, batch_size=5, seed=0, epoch=2))
    assert len(epoch1) == 2 and epoch1[0][0].shape == (5, 16, 24, 1)
    for (a, la), (b, lb) in zip(epoch1, again):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(epoch1[0][0], epoch2[0][0])
    assert len(set(np.concatenate([l for _, l in epoch1]).tolist())) == 3


def test_iteration_resumes_mid_epoch_exactly():
    source = toy_source(n=20)
    loader = train_loader(source, IMAGE, AUGMENT, batch_size=3, seed=5, epoch=3)
    uninterrupted = batches(loader)
    iterator = iter(train_loader(source, IMAGE, AUGMENT, batch_size=3, seed=5, epoch=3))
    for _ in range(2):
        next(iterator)
    state = iterator.get_state()
    resumed = iter(train_loader(source, IMAGE, AUGMENT, batch_size=3, seed=5, epoch=3))
    resumed.set_state(state)
    rest = batches(resumed)
    assert len(rest) == len(uninterrupted) - 2 == 4
    for (a, la), (b, lb) in zip(rest, uninterrupted[2:]):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)


def test_spec_augment_masks_bands_with_the_mean():
    spec = np.arange(20 * 30, dtype=np.float32).reshape(20, 30)
    out = spec_augment(spec, np.random.default_rng(1), freq_masks=2, freq_width=5,
                       time_masks=2, time_width=6)
    masked = out != spec
    rows, cols = masked.all(axis=1), masked.all(axis=0)
    assert 0 < rows.sum() <= 10 and 0 < cols.sum() <= 12
    assert np.all(out[masked] == spec.mean())
    assert np.all(masked == (rows[:, None] | cols[None, :]))  # only whole bands and spans


def noise_levels_and_cells(noisy_windows):
    """Each window's noise level (dB of its mean power) and its cells' powers over that mean,
    for noise added to silence: Exp(1) has mean 1, so the mean power is the level."""
    powers = [10 ** (np.asarray(w, np.float64) / 10) for w in noisy_windows]
    levels = np.array([10 * np.log10(p.mean()) for p in powers])
    cells = np.concatenate([(p / p.mean()).ravel()[::7] for p in powers])
    return levels, cells


def test_random_noise_adds_white_noise_power_at_a_uniform_level():
    # Into silence (-200 dB: no power) the noise alone comes out: levels uniform in
    # [-80, -30] dB, cells exponential about them (1,024 cells a window: the level is read
    # to about 0.14 dB).
    silence = np.full((16, 64), -200.0, np.float32)
    rng = np.random.default_rng(0)
    levels, cells = noise_levels_and_cells(random_noise(silence, -30.0, -80.0, rng)
                                           for _ in range(300))
    assert -80.5 < levels.min() and levels.max() < -29.5
    assert scipy.stats.kstest(levels, scipy.stats.uniform(-80, 50).cdf).pvalue > 1e-3
    assert scipy.stats.kstest(cells, scipy.stats.expon().cdf).pvalue > 1e-3
    # Power only adds: no cell gets quieter, and a loud one barely moves.
    spec = np.random.default_rng(1).uniform(-80, 0, (16, 64)).astype(np.float32)
    noisy = random_noise(spec, -30.0, -80.0, rng)
    assert np.all(noisy >= spec - 1e-4)
    assert np.median((noisy - spec)[spec > -5]) < 0.01


def test_random_noise_off_leaves_the_window_and_the_random_stream_alone():
    spec = np.zeros((8, 5), np.float32)
    rng, untouched = np.random.default_rng(1), np.random.default_rng(1)
    assert random_noise(spec, 0.0, -80.0, rng) is spec
    assert rng.random() == untouched.random()


def test_random_filter_shifts_each_band_by_straight_lines_between_uniform_gains():
    # 21 bands, 3 points: knots at bands 0, 10 and 20, so the gain is a straight line on
    # 0..10 and on 10..20, and its value at a knot is that point's uniform draw.
    spec = np.random.default_rng(0).uniform(-80, 0, (21, 30)).astype(np.float32)
    rng = np.random.default_rng(3)
    knot_gains = []
    for _ in range(1000):
        gain = random_filter(spec, 6.0, 3, rng) - spec
        np.testing.assert_allclose(gain - gain[:, :1], 0, atol=1e-4)  # the same at every frame
        curve = gain[:, 0]
        bends = np.abs(np.diff(curve, 2)) > 1e-4
        assert not bends[np.arange(19) != 9].any()  # second differences vanish off knot 10
        knot_gains.append(curve[[0, 10, 20]])
    knot_gains = np.array(knot_gains)
    assert np.abs(knot_gains).max() <= 6.0
    for column in knot_gains.T:
        assert scipy.stats.kstest(column, scipy.stats.uniform(-6, 12).cdf).pvalue > 1e-3
    # The three gains are drawn independently of one another.
    assert np.abs(np.corrcoef(knot_gains.T)[np.triu_indices(3, 1)]).max() < 0.1


def test_random_filter_off_leaves_the_window_and_the_random_stream_alone():
    spec = np.zeros((8, 5), np.float32)
    rng, untouched = np.random.default_rng(1), np.random.default_rng(1)
    assert random_filter(spec, 0.0, 4, rng) is spec
    assert rng.random() == untouched.random()


def test_mixup_mixes_images_and_labels_with_the_same_weight():
    images = np.stack([np.full((2, 2, 1), v, np.float32) for v in (0.0, 10.0, 20.0, 30.0)])
    labels = np.array([0, 1, 2, 0], np.int32)
    out = mixup(images, labels, 0.4, np.random.default_rng(0))
    assert np.all((out["mix_weight"] >= 0) & (out["mix_weight"] <= 1))
    np.testing.assert_array_equal(out["label"], labels)
    # Solve image = w * x + (1 - w) * x[perm] for x[perm]: a permutation of the inputs, and
    # mix_label holds the labels of that same permutation.
    perm_values = (out["image"][:, 0, 0, 0] - out["mix_weight"] * images[:, 0, 0, 0]) / \
        np.maximum(1 - out["mix_weight"], 1e-6)
    np.testing.assert_allclose(np.sort(perm_values), [0, 10, 20, 30], atol=1e-2)
    perm = np.rint(perm_values / 10).astype(int)
    np.testing.assert_array_equal(out["mix_label"], labels[perm])


def test_random_affine_is_identity_without_ranges_and_flips_when_asked():
    image = np.random.default_rng(0).normal(size=(12, 10, 3)).astype(np.float32)
    same = random_affine(image, np.random.default_rng(0))
    np.testing.assert_allclose(same, image, atol=1e-5)
    flips = [random_affine(image, np.random.default_rng(s), horizontal_flip=True)
             for s in range(8)]
    assert any(np.allclose(f, image[:, ::-1], atol=1e-5) for f in flips)
    shifted = random_affine(image, np.random.default_rng(0), width_shift_range=0.2,
                            height_shift_range=0.2, shear_range=20, zoom_range=0.2)
    assert shifted.shape == image.shape and not np.allclose(shifted, image)


def test_imagenet_normalisation_of_three_channels():
    window = np.full((4, 4), -20.0, np.float32)  # 0.75 of the way up a top_db of 80
    settings = ImageSettings(crop_frames=4, image_size=(4, 4), channels=3,
                             normalization="imagenet")
    image = spectrogram_image(window, settings)
    np.testing.assert_allclose(image[0, 0], (0.75 - np.array([0.485, 0.456, 0.406])) /
                               np.array([0.229, 0.224, 0.225]), rtol=1e-5)


def test_feature_cache_hits_on_the_second_run_and_separates_settings(tmp_path):
    audio = np.arange(100, dtype=np.int16)
    calls = []

    def compute():
        calls.append(1)
        return np.ones((2, 3), np.float32) * len(calls)

    first = FeatureCache(tmp_path, {"n_mels": 64})
    a = first.get(audio, 4000, compute)
    second = FeatureCache(tmp_path, {"n_mels": 64})
    b = second.get(audio, 4000, compute)
    np.testing.assert_array_equal(a, b)
    assert len(calls) == 1 and second.hits == 1
    other = FeatureCache(tmp_path, {"n_mels": 128})
    assert other.get(audio, 4000, compute)[0, 0] == 2  # recomputed, not the stale array
    assert FeatureCache(tmp_path, {"n_mels": 64}).get(audio, 8000, compute)[0, 0] == 3
    for path in first.folder.glob("*.npy"):
        path.write_bytes(b"torn")
    assert FeatureCache(tmp_path, {"n_mels": 64}).get(audio, 4000, compute)[0, 0] == 4


@pytest.fixture
def tiny_config(tmp_path):
    config = heartbeat_synthetic.get_config()
    config.data.data_dir = str(tmp_path)
    config.data.synthetic.num_per_class = (("normal", 8), ("murmur", 6), ("extrastole", 6))
    config.data.image_size = (32, 32)
    config.data.crop_seconds = 1.0
    config.batch_size = 4
    return config


def patient_folder(root) -> dict[str, str]:
    """An audio_folder CSV of 18 recordings by 6 patients (3 each, one class per patient);
    returns each file's patient."""
    root.mkdir()
    patients = {}
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "group"])
        for i in range(18):
            patient, label = f"p{i // 3}", ("normal", "murmur", "extrastole")[i // 3 % 3]
            sf.write(root / f"{i}.wav", synthesize(label, np.random.default_rng(i), 4000, 1.2),
                     4000, subtype="PCM_16")
            writer.writerow([f"{i}.wav", label, patient])
            patients[f"{i}.wav"] = patient
    return patients


def test_grouped_and_k_fold_configs_reach_the_datasets(tiny_config, tmp_path):
    patients = patient_folder(tmp_path / "patients")
    tiny_config.data.update(name="audio_folder", manual_dir=str(tmp_path / "patients"),
                            csv="labels.csv")

    def split() -> tuple[list[str], set[str]]:
        """The validation files, and the patients with recordings on both sides."""
        datasets = get_datasets(tiny_config)
        assert len(datasets.train) + len(datasets.val) == 18
        val = datasets.val_file_names
        return val, ({patients[f] for f in val}
                     & {patient for f, patient in patients.items() if f not in val})

    assert split()[1]  # a split by recording shares patients: the check can fail
    tiny_config.data.grouped = True
    assert not split()[1]
    tiny_config.data.num_folds = 3
    names = []
    for fold in range(3):
        tiny_config.data.fold = fold
        val, shared = split()
        assert not shared, fold
        names.extend(val)
    assert sorted(names) == sorted(patients)  # every recording validated exactly once


def test_mixup_batches_train(tiny_config):
    tiny_config.augment.mixup_alpha = 0.4
    batch = next(iter(get_datasets(tiny_config).train_batches(1)))
    assert set(batch) == {"image", "label", "mix_label", "mix_weight"}


def test_jax_frontend_gives_the_librosa_spectrograms(tiny_config):
    librosa_sets = get_datasets(tiny_config)
    tiny_config.audio.frontend = "jax"
    jax_sets = get_datasets(tiny_config)
    for a, b in zip(librosa_sets.train.spectrograms, jax_sets.train.spectrograms):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=0.01)
