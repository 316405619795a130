"""Training windows built on the devices (`config.augment.on_device`): the host path's
windows and images where nothing is random, its distributions where something is, and the
same resumable, seeded batches."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import scipy.stats

from cnnjax.audio.features import crop_frames
from cnnjax.data import get_datasets, random_filter, random_noise, spec_augment
from cnnjax.data.device_windows import (DeviceWindows, IndexBatches, resident_spectrograms, resize_matrix,
                                        window_batch, window_image)
from cnnjax.data.pipeline import (AugmentSettings, ImageSettings, SpectrogramSource,
                                  spectrogram_image)
from cnnjax.errors import ConfigError
from cnnjax.parallel import DataParallel
from cnnjax.train.resume import check_resumable, config_changes
from experiments import heartbeat_synthetic
from test_pipeline import noise_levels_and_cells, tiny_config  # noqa: F401 (a fixture)

NOTHING_RANDOM = AugmentSettings(random_crop=False)
WIDTH = 30


def recordings(lengths=(50, 31, 30, 17, 8), mels=20):
    rng = np.random.default_rng(0)
    return [rng.uniform(-80, 0, (mels, n)).astype(np.float32) for n in lengths]


def on_device(specs, width=WIDTH):
    return jax.tree.map(jnp.asarray, resident_spectrograms(specs, width))


def images_of(specs, index, seeds, image, augment):
    """The images of one recording under many seeds, as one compiled, vectorised call."""
    many = jax.jit(jax.vmap(window_image, in_axes=(None, None, 0, None, None)),
                   static_argnums=(3, 4))
    return np.asarray(many(on_device(specs, image.crop_frames), jnp.int32(index),
                           jnp.asarray(seeds, jnp.uint32), image, augment))


def image_of(specs, index, seed, image, augment):
    return np.asarray(window_image(on_device(specs, image.crop_frames), jnp.int32(index),
                                   jnp.uint32(seed), image, augment))


@pytest.mark.parametrize("size_in, size_out", [(20, 16), (20, 20), (30, 64), (7, 2), (5, 11)])
def test_resize_matrix_is_scipy_zoom_order_1(size_in, size_out):
    x = np.random.default_rng(1).normal(size=(size_in, 3)).astype(np.float32)
    zoomed = scipy.ndimage.zoom(x, (size_out / size_in, 1), order=1)
    np.testing.assert_allclose(resize_matrix(size_in, size_out) @ x, zoomed, atol=1e-5)


@pytest.mark.parametrize("image", [
    ImageSettings(crop_frames=WIDTH, image_size=(16, 24)),
    ImageSettings(crop_frames=WIDTH, image_size=(20, WIDTH)),  # no resize
    ImageSettings(crop_frames=WIDTH, image_size=(32, 40), channels=3, normalization="imagenet"),
])
def test_centred_windows_are_the_host_images(image):
    # Longer, one frame longer, exactly as long and shorter than the window (padded with
    # the recording's silence, centred): the host's crop_frames + spectrogram_image.
    specs = recordings()
    for index, spectrogram in enumerate(specs):
        expected = spectrogram_image(crop_frames(spectrogram, WIDTH), image)
        got = image_of(specs, index, 0, image, NOTHING_RANDOM)
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=f"recording {index}")


def test_random_windows_are_slices_at_every_start_with_equal_chances():
    # Each frame holds its own index, so a window tells where it starts.
    frames = np.tile(np.arange(40, dtype=np.float32), (4, 1)) - 80
    image = ImageSettings(crop_frames=10, image_size=(4, 10), top_db=80.0)
    data = on_device([frames], 10)
    seeds = jnp.arange(3000, dtype=jnp.uint32)
    images = jax.vmap(window_image, in_axes=(None, None, 0, None, None))(
        data, jnp.int32(0), seeds, image, AugmentSettings())
    windows = np.asarray(images)[..., 0] * 40 - 40 + 80  # undo the dB scaling
    starts = np.rint(windows[:, 0, 0]).astype(int)
    np.testing.assert_allclose(windows[:, 0, :], starts[:, None] + np.arange(10), atol=1e-3)
    counts = np.bincount(starts, minlength=31)
    assert len(counts) == 31 and counts.min() > 0  # starts 0..30, as random_window_start
    chi2 = ((counts - 3000 / 31) ** 2 / (3000 / 31)).sum()
    assert chi2 < 65  # 30 degrees of freedom: p ~ 0.0002 for a fair die


def test_gain_shifts_the_whole_window_by_at_most_gain_db():
    specs, image = recordings(), ImageSettings(crop_frames=WIDTH, image_size=(20, WIDTH))
    plain = image_of(specs, 0, 7, image, AugmentSettings(random_crop=False))
    shifts = []
    for seed in range(200):
        gained = image_of(specs, 0, seed, image, AugmentSettings(random_crop=False, gain_db=6.0))
        delta = (gained - plain) * 40  # back to dB
        np.testing.assert_allclose(delta, delta.flat[0], atol=1e-3)
        shifts.append(delta.flat[0])
    assert -6 <= min(shifts) < -4 and 4 < max(shifts) <= 6
    assert abs(np.mean(shifts)) < 0.6  # uniform on [-6, 6]: standard error 0.245


def test_noise_is_the_hosts_white_noise_at_a_uniform_level():
    # Into silence the noise alone comes out; its levels and cells are distributed as the
    # host's (`random_noise`), a level uniform in [-80, -30] dB and cells Exp(1) about it.
    silence = np.full((16, WIDTH), -200.0, np.float32)
    image = ImageSettings(crop_frames=WIDTH, image_size=(16, WIDTH))
    augment = AugmentSettings(random_crop=False, noise_db=-30.0)
    device = images_of([silence], 0, range(300), image, augment)[..., 0] * 40 - 40
    rng = np.random.default_rng(0)
    host = [random_noise(silence, -30.0, -80.0, rng) for _ in range(300)]
    (device_levels, device_cells), (host_levels, host_cells) = map(noise_levels_and_cells,
                                                                  (device, host))
    assert -80.5 < device_levels.min() and device_levels.max() < -29.5
    assert scipy.stats.ks_2samp(device_levels, host_levels).pvalue > 1e-3
    assert scipy.stats.ks_2samp(device_cells, host_cells).pvalue > 1e-3
    assert scipy.stats.kstest(device_cells, scipy.stats.expon().cdf).pvalue > 1e-3


def test_filter_gains_every_band_like_the_host():
    # 21 bands, 3 points (knots at bands 0, 10, 20), no resize: the image's change in dB is
    # the gain curve. A random crop with and without the filter is the same window (the
    # filter's key is a fourth one), so the change is the same at every frame.
    spectrogram = recordings(lengths=(50,), mels=21)[0]
    image = ImageSettings(crop_frames=WIDTH, image_size=(21, WIDTH))
    filtered = AugmentSettings(filter_db=6.0, filter_points=3)
    plain = images_of([spectrogram], 0, range(300), image, AugmentSettings())
    gains = (images_of([spectrogram], 0, range(300), image, filtered) - plain)[..., 0] * 40
    device_knots, host_knots = [], []
    for seed, gain in enumerate(gains):
        np.testing.assert_allclose(gain - gain[:, :1], 0, atol=1e-3)
        curve = gain[:, 0]
        np.testing.assert_allclose(curve, np.interp(np.arange(21), [0, 10, 20],
                                                    curve[[0, 10, 20]]), atol=1e-3)
        device_knots.append(curve[[0, 10, 20]])
        host = random_filter(spectrogram, 6.0, 3, np.random.default_rng(seed)) - spectrogram
        host_knots.append(host[[0, 10, 20], 0])
    device_knots, host_knots = np.array(device_knots), np.array(host_knots)
    assert np.abs(device_knots).max() <= 6.0 + 1e-3
    for device, host in zip(device_knots.T, host_knots.T):  # the same distribution
        assert scipy.stats.ks_2samp(device, host).pvalue > 1e-3
        assert scipy.stats.kstest(device, scipy.stats.uniform(-6, 12).cdf).pvalue > 1e-3


def test_spec_augment_masks_bands_like_the_host():
    # The same rule as `spec_augment`: masked cells hold the window's mean, and over many
    # draws each row and column is masked as often as on the host.
    spectrogram = recordings(lengths=(WIDTH,))[0]
    image = ImageSettings(crop_frames=WIDTH, image_size=(20, WIDTH))
    augment = AugmentSettings(random_crop=False, freq_masks=2, freq_mask_width=6,
                              time_masks=1, time_mask_width=9)
    device_masked, host_masked = [], []
    for seed in range(400):
        window = image_of([spectrogram], 0, seed, image, augment)[..., 0] * 40 - 40
        masked = np.abs(window - spectrogram.mean()) < 1e-4
        np.testing.assert_allclose(window[~masked], spectrogram[~masked], atol=1e-3)
        device_masked.append(masked)
        host = spec_augment(spectrogram, np.random.default_rng(seed), freq_masks=2,
                            freq_width=6, time_masks=1, time_width=9)
        host_masked.append(host == spectrogram.mean())
    device_rate = np.mean(device_masked, axis=0)
    host_rate = np.mean(host_masked, axis=0)
    # Cell by cell the masking rates agree within sampling noise (400 draws each).
    assert np.abs(device_rate.mean() - host_rate.mean()) < 0.03
    np.testing.assert_allclose(device_rate.mean(axis=1), host_rate.mean(axis=1), atol=0.09)
    np.testing.assert_allclose(device_rate.mean(axis=0), host_rate.mean(axis=0), atol=0.09)


def test_mixup_on_the_device_mixes_images_and_labels_with_one_weight():
    specs = recordings()
    image = ImageSettings(crop_frames=WIDTH, image_size=(8, 8))
    batch = {"index": jnp.arange(5, dtype=jnp.int32), "label": jnp.array([0, 1, 2, 0, 1]),
             "seed": jnp.arange(5, dtype=jnp.uint32) + 11}
    plain = window_batch(on_device(specs), batch, image=image, augment=NOTHING_RANDOM)
    mixed = window_batch(on_device(specs), batch, image=image,
                         augment=AugmentSettings(random_crop=False, mixup_alpha=0.4))
    weight = np.asarray(mixed["mix_weight"])
    assert ((0 < weight) & (weight < 1)).all()
    images = np.asarray(plain["image"])
    for row in range(5):
        # The partner is the example whose image completes the mix.
        candidates = [j for j in range(5)
                      if np.allclose(np.asarray(mixed["image"][row]),
                                     weight[row] * images[row] + (1 - weight[row]) * images[j],
                                     atol=1e-5)]
        assert candidates, row
        assert int(mixed["mix_label"][row]) in {int(batch["label"][j]) for j in candidates}
    np.testing.assert_array_equal(mixed["label"], batch["label"])


def test_index_batches_resume_mid_epoch_and_build_the_same_windows():
    specs = recordings(lengths=tuple(range(25, 46)))
    source = SpectrogramSource(specs, np.arange(21) % 3)
    image = ImageSettings(crop_frames=WIDTH, image_size=(16, 16))
    augment = AugmentSettings(gain_db=3.0, freq_masks=1, freq_mask_width=4)
    windows = DeviceWindows(resident_spectrograms(specs, WIDTH), image, augment)
    parallel = DataParallel(device_windows=windows)

    def images(batches):
        return [np.asarray(parallel.put_train_batch(b)["image"]) for b in batches]

    uninterrupted = list(IndexBatches(source, 4, seed=3, epoch=2))
    assert len(uninterrupted) == 5  # 21 records: the remainder is dropped
    seen = np.concatenate([b["index"] for b in uninterrupted])
    assert len(set(seen.tolist())) == 20
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in uninterrupted]),
                                  source.labels[seen])
    iterator = IndexBatches(source, 4, seed=3, epoch=2)
    next(iterator), next(iterator)
    rest = images(IndexBatches(source, 4, seed=3, epoch=2, state=iterator.get_state()))
    expected = images(uninterrupted)
    assert len(rest) == 3
    for a, b in zip(rest, expected[2:]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(expected[0], expected[1])
    other_epoch = next(IndexBatches(source, 4, seed=3, epoch=3))
    assert not np.array_equal(images([other_epoch])[0], expected[0])
    with pytest.raises(ValueError, match="another epoch"):
        IndexBatches(source, 4, seed=3, epoch=3, state=iterator.get_state())


def test_processes_take_their_share_of_every_global_batch():
    source = SpectrogramSource(recordings(lengths=tuple(range(25, 41))), np.arange(16) % 3)
    whole = list(IndexBatches(source, 8, seed=0, epoch=1))
    shares = [list(IndexBatches(source, 8, seed=0, epoch=1, process_index=p, process_count=2))
              for p in range(2)]
    for step, batch in enumerate(whole):
        for key in ("index", "label", "seed"):
            np.testing.assert_array_equal(
                np.concatenate([shares[0][step][key], shares[1][step][key]]), batch[key])


def test_on_device_datasets_hand_over_indices_and_seeds(tiny_config):  # noqa: F811
    tiny_config.augment.on_device = True
    datasets = get_datasets(tiny_config)
    batch = next(iter(datasets.train_batches(1)))
    assert set(batch) == {"index", "label", "seed"}
    assert datasets.device_windows is not None
    parallel = DataParallel(device_windows=datasets.device_windows)
    placed = parallel.put_train_batch(batch)
    assert placed["image"].shape == (tiny_config.batch_size, *datasets.input_shape)
    np.testing.assert_array_equal(placed["label"], datasets.train.labels[batch["index"]])


def test_a_run_cannot_resume_on_the_other_input_path():
    # The saved position within an epoch is the host path's grain state or IndexBatches'.
    config = heartbeat_synthetic.get_config()
    saved = json.loads(config.to_json())
    del saved["augment"]["on_device"]  # a run written before the field existed
    assert config_changes(json.dumps(saved), config) == {}
    config.augment.on_device = True
    with pytest.raises(ConfigError, match="config.augment.on_device was None .* is True"):
        check_resumable(config_changes(json.dumps(saved), config))
    config.augment.on_device, config.augment.gain_db = False, 3.0
    check_resumable(config_changes(json.dumps(saved), config))  # other augmentations may change
