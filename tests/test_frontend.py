"""The JAX log-mel frontend against the librosa path (`cnnjax.audio.features.log_mel`)."""

from __future__ import annotations

import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

from cnnjax.audio.features import MelSettings, load_audio, log_mel
from cnnjax.audio.frontend import MelFrontend, log_mel_jax, log_mel_many, num_frames
from cnnjax.audio.synth import synthesize

PASCAL_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pascal-heartbeat"
TOLERANCE_DB = 0.01
SETTINGS = MelSettings()


@pytest.fixture(scope="module")
def frontend():
    return jax.jit(MelFrontend.create(SETTINGS))


def _synthetic(label: str, seed: int, duration: float = 3.0) -> np.ndarray:
    return synthesize(label, np.random.default_rng(seed), duration=duration).astype(np.float32)


def test_matches_librosa_on_synthetic_heart_sound(frontend):
    samples = _synthetic("murmur", 0)
    expected = log_mel(samples, SETTINGS)
    got = np.asarray(frontend(samples[None]))[0]
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE_DB)
    # The -top_db floor is the same number on both sides.
    floor = expected == expected.max() - SETTINGS.top_db
    np.testing.assert_array_equal(got[floor], expected[floor])


def test_matches_librosa_on_real_recordings(frontend):
    folder = PASCAL_DIR / "set_b"
    paths = sorted(folder.glob("*.wav")) if folder.is_dir() else []
    if not paths:
        pytest.skip(f"real PASCAL heart-sound recordings not found in {folder}")
    chosen = paths[:: max(1, len(paths) // 10)][:10]
    for path in chosen:
        samples = load_audio(path, SETTINGS.sample_rate)
        expected = log_mel(samples, SETTINGS)
        got = np.asarray(frontend(samples[None]))[0]
        assert got.shape == expected.shape, path.name
        diff = float(np.abs(got - expected).max())
        assert diff <= TOLERANCE_DB, f"{path.name}: max |dB difference| {diff:.4f}"


def test_batch_equals_per_example(frontend):
    # Very different gains: the 0 dB reference and the floor are per example.
    batch = np.stack([_synthetic("normal", 1), 1e-3 * _synthetic("murmur", 2),
                      30.0 * _synthetic("extrastole", 3)])
    together = np.asarray(frontend(batch))
    assert together.shape == (3, SETTINGS.n_mels, num_frames(batch.shape[1], SETTINGS))
    for i, samples in enumerate(batch):
        alone = np.asarray(frontend(samples[None]))[0]
        np.testing.assert_allclose(together[i], alone, rtol=0, atol=1e-4)
        assert together[i].max() == pytest.approx(0.0, abs=1e-4)
        assert together[i].min() >= -SETTINGS.top_db
    # A leading-dims-free call and the function form agree with the object form.
    np.testing.assert_allclose(np.asarray(log_mel_jax(batch[0], SETTINGS)), together[0],
                               rtol=0, atol=1e-4)


@pytest.mark.parametrize("num_samples", [100, 1000, 4001, 12_345])
def test_jits_and_frame_count_matches_librosa(num_samples):
    settings = MelSettings(n_mels=64)
    samples = _synthetic("normal", 4, duration=4.0)[:num_samples]
    jitted = jax.jit(log_mel_jax, static_argnames="settings")
    got = jitted(samples[None], settings)
    frames = 1 + num_samples // settings.hop_length
    assert got.shape == (1, settings.n_mels, frames)
    with warnings.catch_warnings():  # librosa warns about input shorter than n_fft
        warnings.simplefilter("ignore", UserWarning)
        expected = log_mel(samples, settings)
    assert expected.shape == (settings.n_mels, frames)
    np.testing.assert_allclose(np.asarray(got)[0], expected, rtol=0, atol=TOLERANCE_DB)


def test_rejects_integer_samples():
    with pytest.raises(ValueError, match="float waveforms"):
        log_mel_jax(np.zeros((1, 4000), np.int16), SETTINGS)


def test_recordings_of_many_lengths_compile_one_program_per_bucket(caplog):
    # Seven lengths in one power-of-two bucket: the same numbers as one at a time, from
    # one compiled log-mel (cold, a program per distinct length ran at 13 clips/s).
    settings = MelSettings()
    rng = np.random.default_rng(3)
    clips = [synthesize("murmur", rng, 4000, seconds) for seconds in
             (2.1, 2.3, 2.6, 3.0, 3.3, 3.7, 4.0)]
    with jax.log_compiles(True), caplog.at_level("WARNING"):
        many = log_mel_many(clips, settings, batch_size=4)
    compiled = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert len(compiled) <= 3, compiled
    assert sum("_padded_log_mel" in message for message in compiled) == 1, compiled
    for clip, spectrogram in zip(clips, many):
        np.testing.assert_allclose(spectrogram, np.asarray(log_mel_jax(clip[None], settings))[0],
                                   atol=1e-4)
