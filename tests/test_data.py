from collections import Counter

import ml_collections
import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from cnnjax.audio.features import MelSettings, log_mel, remove_band_means
from cnnjax.audio.synth import synthesize
from cnnjax.data import canonical_name, get_datasets, read_index, stratified_split
from cnnjax.errors import DataError
from cnnjax.predict import read_spectrograms

from experiments import heartbeat_synthetic


def test_canonical_names_match_csv_spellings_to_files():
    # set_b: the CSV adds Btraining_ / Bunlabelledtest_ and drops one underscore.
    assert canonical_name("set_b/Btraining_normal_103_1305031931979_D1.wav") == \
        canonical_name("normal__103_1305031931979_D1.wav")
    assert canonical_name("set_b/Bunlabelledtest_101_1305030823364_E.wav") == \
        canonical_name("Bunlabelledtest__101_1305030823364_E.wav")
    assert canonical_name("set_b/Btraining_murmur_Btraining_noisymurmur_162_1307101835989_B.wav") \
        == canonical_name("murmur_noisymurmur_162_1307101835989_B.wav")
    assert canonical_name("set_a/Aunlabelledtest__201108222233.wav") == \
        canonical_name("__201108222233.wav")
    assert canonical_name("normal__1.wav") != canonical_name("normal__11.wav")


def write_wav(path, seconds=0.5, rate=4000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(seconds * rate), np.float32), rate, subtype="PCM_16")


def test_read_index_lists_every_row_it_cannot_resolve(tmp_path):
    write_wav(tmp_path / "set_b" / "normal__101_1_A.wav")
    (tmp_path / "set_b.csv").write_text(
        "dataset,fname,label,sublabel\n"
        "b,set_b/Btraining_normal_101_1_A.wav,normal,\n"
        "b,set_b/Btraining_murmur_102_2_B.wav,murmur,\n"
        "b,set_b/Btraining_normal_103_3_C.wav,normal,\n")
    with pytest.raises(DataError, match=r"2 rows .*murmur_102_2_B.*normal_103_3_C"):
        read_index(tmp_path, "set_b")
    with pytest.raises(DataError, match="set_a.csv does not exist"):
        read_index(tmp_path, "set_a")


def test_real_pascal_rows_all_resolve_with_the_published_counts(pascal_dir):
    set_b = read_index(pascal_dir, "set_b")
    assert len(set_b) == 656 and len({r.path for r in set_b}) == 656
    assert Counter(r.label for r in set_b if r.label) == {"normal": 320, "murmur": 95,
                                                          "extrastole": 46}
    assert Counter(r.sublabel for r in set_b if r.sublabel) == {"noisynormal": 120,
                                                                "noisymurmur": 29}
    assert next(r for r in set_b if r.path.name == "normal__103_1305031931979_D1.wav"
                ).patient == "103"
    set_a = read_index(pascal_dir, "set_a")
    assert Counter(r.label for r in set_a if r.label) == {"artifact": 40, "murmur": 34,
                                                          "normal": 31, "extrahls": 19}


def test_stratified_split_keeps_class_proportions_and_is_seeded():
    labels = np.array([0] * 50 + [1] * 20 + [2] * 10)
    train, val = stratified_split(labels, 0.3, seed=0)
    assert sorted(np.concatenate([train, val])) == list(range(80))
    assert Counter(labels[val]) == {0: 15, 1: 6, 2: 3}
    again, _ = stratified_split(labels, 0.3, seed=0)
    other, _ = stratified_split(labels, 0.3, seed=1)
    assert np.array_equal(train, again) and not np.array_equal(train, other)


@pytest.fixture
def tiny_config(tmp_path) -> ml_collections.ConfigDict:
    config = heartbeat_synthetic.get_config()
    config.data.data_dir = str(tmp_path)
    config.data.synthetic.num_per_class = (("normal", 10), ("murmur", 6), ("extrastole", 4))
    config.data.image_size = (32, 48)
    config.data.crop_seconds = 1.0
    config.batch_size = 4
    config.eval_batch_size = 4
    return config


def test_get_datasets_batches_the_synthetic_set(tiny_config):
    datasets = get_datasets(tiny_config)
    assert datasets.class_names == ("extrastole", "murmur", "normal")
    assert (len(datasets.train), len(datasets.val)) == (14, 6)
    assert datasets.input_shape == (32, 48, 1) and datasets.steps_per_epoch == 3
    epoch1 = list(datasets.train_batches(1))
    assert len(epoch1) == 3 and epoch1[0]["image"].shape == (4, 32, 48, 1)
    assert epoch1[0]["label"].dtype == np.int32
    again = list(datasets.train_batches(1))
    epoch2 = list(datasets.train_batches(2))
    np.testing.assert_array_equal(epoch1[0]["image"], again[0]["image"])
    assert not np.array_equal(epoch1[0]["image"], epoch2[0]["image"])
    # Evaluation takes every window of each validation recording, in order.
    evals = list(datasets.eval_batches())
    records = np.concatenate([b["record"][b["mask"]] for b in evals])
    assert sorted(set(records.tolist())) == list(range(6)) and np.all(np.diff(records) >= 0)
    np.testing.assert_array_equal(np.concatenate([b["label"][b["mask"]] for b in evals]),
                                  datasets.val.labels[records])
    assert not evals[-1]["image"][~evals[-1]["mask"]].any()
    tiny_config.data.eval_windows = "centre"  # one window per recording
    evals = list(get_datasets(tiny_config).eval_batches())
    assert [int(b["mask"].sum()) for b in evals] == [4, 2]
    assert not evals[1]["image"][2:].any()
    np.testing.assert_array_equal(np.concatenate([b["label"][b["mask"]] for b in evals]),
                                  datasets.val.labels)


def test_three_channel_images_repeat_the_spectrogram(tiny_config):
    tiny_config.data.channels = 3
    batch = next(get_datasets(tiny_config).eval_batches())
    assert batch["image"].shape == (4, 32, 48, 3)
    np.testing.assert_array_equal(batch["image"][..., 0], batch["image"][..., 2])


def test_removing_band_means_cancels_a_recording_chains_filter():
    """A stethoscope's frequency response is a linear filter: a constant per mel band in dB.
    Per-recording band means remove it, closed form and on real filtered recordings."""
    rng = np.random.default_rng(0)
    spectrogram = rng.uniform(-80, 0, (16, 50)).astype(np.float32)
    response = rng.uniform(-20, 20, (16, 1)).astype(np.float32)
    np.testing.assert_allclose(remove_band_means(spectrogram + response, -40.0),
                               remove_band_means(spectrogram, -40.0), atol=1e-4)
    np.testing.assert_allclose(remove_band_means(spectrogram, -40.0).mean(axis=1), -40.0,
                               atol=1e-4)
    # A heart sound through the diaphragm's tilt, a low-pass and a high-pass, and without.
    samples = synthesize("murmur", rng, duration=6.0) + 0.01 * rng.standard_normal(24000)
    mel = MelSettings(sample_rate=4000, n_mels=32, fmin=20.0, fmax=800.0, top_db=120.0)
    plain = log_mel(samples.astype(np.float32), mel)
    for b, a in (([1.0, -0.95], [1.0]), scipy.signal.butter(2, 200, fs=4000),
                 scipy.signal.butter(2, 100, "high", fs=4000)):
        through = log_mel(scipy.signal.lfilter(b, a, samples).astype(np.float32), mel)
        gap_before = np.abs(through - plain).mean()
        gap_after = np.abs(remove_band_means(through, -60.0) -
                           remove_band_means(plain, -60.0)).mean()
        assert gap_before > 0.9 and gap_after < 0.2, (gap_before, gap_after)


def test_band_means_are_removed_for_training_evaluation_and_prediction(tiny_config, tmp_path):
    plain = get_datasets(tiny_config)
    tiny_config.audio.remove_band_means = True
    normalised = get_datasets(tiny_config)
    for ours, theirs in ((normalised.train, plain.train), (normalised.val, plain.val)):
        for got, raw in zip(ours.spectrograms, theirs.spectrograms):
            np.testing.assert_array_equal(got, remove_band_means(raw, -40.0))
            np.testing.assert_allclose(got.mean(axis=1), -40.0, atol=1e-3)
    path = tmp_path / "beat.wav"
    sf.write(path, synthesize("normal", np.random.default_rng(1), duration=3.0), 4000)
    (normalised_input,), _ = read_spectrograms([str(path)], tiny_config)
    tiny_config.audio.remove_band_means = False
    (raw_input,), _ = read_spectrograms([str(path)], tiny_config)
    np.testing.assert_array_equal(normalised_input, remove_band_means(raw_input, -40.0))
