"""README promises that any format and sample type libsndfile reads gives a recording's
log-mel: WAV with 8/16/24/32-bit integer or 32/64-bit float samples, FLAC, AIFF, Ogg Vorbis,
mono or multi-channel. Here the same samples are written in each, built through the real
audio_folder dataset and feature path, and compared with the same samples in 16-bit WAV,
each within what its format can hold."""

from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from cnnjax.audio.features import MelSettings, log_mel
from cnnjax.audio.io import read_audio
from cnnjax.data.datasets import load_recordings, mel_settings, recording_log_mels
from experiments import heartbeat_synthetic

RATE = 4000  # the experiments' config.audio.sample_rate: no resampling between the files
MEL = MelSettings(sample_rate=RATE)
FOLDER = "recordings"  # the one class folder of the audio_folder layout
REFERENCE = "pcm16.wav"

# Files that hold the 16-bit samples exactly: (name, soundfile format, subtype).
LOSSLESS = [("pcm24.wav", "WAV", "PCM_24"), ("pcm32.wav", "WAV", "PCM_32"),
            ("float.wav", "WAV", "FLOAT"), ("double.wav", "WAV", "DOUBLE"),
            ("pcm16.flac", "FLAC", "PCM_16"), ("pcm24.flac", "FLAC", "PCM_24"),
            ("pcm16.aiff", "AIFF", "PCM_16"), ("pcm24.aif", "AIFF", "PCM_24"),
            ("pcm32.aiff", "AIFF", "PCM_32"), ("float.aifc", "AIFF", "FLOAT")]
EIGHT_BIT = [("u8.wav", "WAV", "PCM_U8"), ("s8.flac", "FLAC", "PCM_S8"),
             ("s8.aiff", "AIFF", "PCM_S8")]
VORBIS = ["vorbis.ogg", "vorbis.oga"]
# (name, format, subtype, channels): the channels average to the 16-bit samples exactly.
MULTI_CHANNEL = [("stereo.wav", "WAV", "PCM_16", 2), ("quad.wav", "WAVEX", "PCM_16", 4),
                 ("stereo.flac", "FLAC", "PCM_24", 2)]
HIGH_RESOLUTION = "hires24.wav"  # 24-bit samples that are not on the 16-bit grid


def signal() -> np.ndarray:
    """1.5 s of heart-sound-band tones over a noise floor (float64 in [-1, 1]); the noise
    keeps every log-mel bin well above the -80 dB clip, so no bin hides a difference."""
    t = np.arange(int(1.5 * RATE)) / RATE
    tones = sum(a * np.sin(2 * np.pi * f * t) for a, f in ((0.3, 50), (0.2, 150), (0.1, 440),
                                                           (0.05, 1200)))
    return tones + 0.02 * np.random.default_rng(0).standard_normal(t.size)


def channel_offsets(channels: int) -> np.ndarray:
    """int16 offsets per channel that sum to zero, so the channels' mean is the mono signal
    and taking any one channel (or their sum) is visibly wrong."""
    t = np.arange(int(1.5 * RATE)) / RATE
    offset = np.round(6000 * np.sin(2 * np.pi * 300 * t) + 2000 * np.sin(2 * np.pi * 31 * t)
                      ).astype(np.int16)
    return np.stack([sign * (offset // k) for k in range(1, channels // 2 + 1)
                     for sign in (1, -1)], axis=1)


def pcm16() -> np.ndarray:
    return np.round(signal() * 32768).astype(np.int16)


def pcm8() -> np.ndarray:
    """The signal rounded to 8 bits, as int16 (a multiple of 256)."""
    return (np.round(pcm16() / 256) * 256).astype(np.int16)


def pcm24() -> np.ndarray:
    """The signal rounded to 24 bits, as int32 (a multiple of 256, as libsndfile takes it)."""
    return (np.round(signal() * 2 ** 23) * 256).astype(np.int32)


def rounding_sigma_db(samples: np.ndarray, step: float) -> np.ndarray:
    """Per log-mel bin, the standard deviation (an upper bound) of how far rounding
    `samples` to a grid of `step` moves the bin, in dB.

    Rounding adds an error spread evenly over +-step/2: white noise of variance step^2/12,
    whose expected mel power in a bin is N = step^2/12 * sum(window^2) * sum(filter weights).
    It moves a bin of power P by 10 log10(1 + (2 Re<X, E> + |E|^2) / P); the cross term
    dominates, and by Cauchy-Schwarz its standard deviation is at most 2 sqrt(N P), i.e.
    10/ln(10) * 2 sqrt(N / P) dB. The loudest bin's share is added, as every bin is
    measured against it. Loud bins are held far tighter than bins near the format's noise
    floor.
    """
    power = librosa.feature.melspectrogram(
        y=samples.astype(np.float32), sr=RATE, n_fft=MEL.n_fft, hop_length=MEL.hop_length,
        n_mels=MEL.n_mels, fmin=MEL.fmin, fmax=MEL.fmax, power=2.0)
    filters = librosa.filters.mel(sr=RATE, n_fft=MEL.n_fft, n_mels=MEL.n_mels, fmin=MEL.fmin,
                                  fmax=MEL.fmax)
    window = scipy.signal.get_window("hann", MEL.n_fft)
    noise = step ** 2 / 12 * np.sum(window ** 2) * filters.sum(axis=1)[:, None]
    sigma_db = 10 / np.log(10) * 2 * np.sqrt(noise / power)
    return sigma_db + sigma_db.flat[np.argmax(power)]


def assert_within_rounding(difference: np.ndarray, sigma_db: np.ndarray) -> None:
    """Every bin within six standard deviations, and the mean of |difference| within the
    mean one (a deviation's mean magnitude is at most its standard deviation)."""
    assert np.all(difference <= 6 * sigma_db)
    assert difference.mean() <= sigma_db.mean()


def write_recordings(folder: Path) -> None:
    """Every case of this module as a file, holding exactly the samples the tests expect."""
    folder.mkdir(parents=True)
    sf.write(folder / REFERENCE, pcm16(), RATE, subtype="PCM_16")
    for name, fmt, subtype in LOSSLESS:  # libsndfile would store int16 unscaled as floats
        samples = pcm16() / 32768 if subtype in ("FLOAT", "DOUBLE") else pcm16()
        sf.write(folder / name, samples, RATE, format=fmt, subtype=subtype)
    for name, fmt, subtype in EIGHT_BIT:
        sf.write(folder / name, pcm8(), RATE, format=fmt, subtype=subtype)
    for name in VORBIS:  # the highest quality; lower ones discard more
        sf.write(folder / name, pcm16(), RATE, format="OGG", subtype="VORBIS",
                 compression_level=0.0)
    for name, fmt, subtype, channels in MULTI_CHANNEL:
        sf.write(folder / name, pcm16()[:, None] + channel_offsets(channels), RATE,
                 format=fmt, subtype=subtype)
    sf.write(folder / HIGH_RESOLUTION, pcm24(), RATE, subtype="PCM_24")


@dataclass
class Built:
    """The written files and, by file name, the samples the build stored (int16) and the
    log-mel training computes from them."""
    folder: Path
    audio: dict[str, np.ndarray]
    log_mel: dict[str, np.ndarray]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    """One audio_folder build of every file of this module."""
    root = tmp_path_factory.mktemp("formats")
    folder = root / "src" / FOLDER
    write_recordings(folder)
    config = heartbeat_synthetic.get_config()
    config.data.name = "audio_folder"
    config.data.manual_dir = str(root / "src")
    config.data.data_dir = str(root / "cache")
    config.data.feature_cache = False  # keyed by samples: equal files would share one entry
    assert mel_settings(config) == MEL
    recordings = load_recordings(config.data, log=lambda _: None)
    assert recordings.summary["skipped"] == [] and recordings.summary["flagged"] == []
    names = [name.removeprefix(f"{FOLDER}/") for name in recordings.file_names]
    return Built(folder, dict(zip(names, (r["audio"] for r in recordings.records))),
                 dict(zip(names, recording_log_mels(config, recordings))))


def test_the_audio_folder_build_takes_every_format_and_extension(built):
    expected = {REFERENCE, HIGH_RESOLUTION, *VORBIS,
                *(case[0] for case in LOSSLESS + EIGHT_BIT + MULTI_CHANNEL)}
    assert set(built.audio) == expected
    assert {Path(name).suffix for name in expected} == {".wav", ".flac", ".aiff", ".aif",
                                                        ".aifc", ".ogg", ".oga"}
    for name in expected:
        assert built.audio[name].shape == pcm16().shape
        assert built.log_mel[name].shape == built.log_mel[REFERENCE].shape


@pytest.mark.parametrize("name", [case[0] for case in LOSSLESS])
def test_lossless_formats_give_the_16_bit_log_mel_exactly(built, name):
    """These formats hold 16-bit samples without loss, so the reading, the stored samples and
    the log-mel must all equal the 16-bit WAV's, bit for bit."""
    samples, rate = read_audio(built.folder / name)
    assert rate == RATE and samples.dtype == np.float32
    np.testing.assert_array_equal(samples, pcm16() / np.float32(32768))
    np.testing.assert_array_equal(built.audio[name], pcm16())
    np.testing.assert_array_equal(built.log_mel[name], built.log_mel[REFERENCE])


@pytest.mark.parametrize("name", [case[0] for case in EIGHT_BIT])
def test_8_bit_formats_differ_from_16_bit_only_by_8_bit_rounding(built, name):
    """8-bit files (unsigned in WAV, signed in FLAC and AIFF) read back as their 8-bit values
    centred on zero, and their log-mel is the 16-bit one moved by 8-bit rounding noise."""
    samples, _ = read_audio(built.folder / name)
    np.testing.assert_array_equal(samples, pcm8() / np.float32(32768))
    np.testing.assert_array_equal(built.audio[name], pcm8())
    difference = np.abs(built.log_mel[name] - built.log_mel[REFERENCE])
    assert_within_rounding(difference, rounding_sigma_db(pcm16() / 32768, step=1 / 128))
    assert difference.max() > 0.1  # 8-bit rounding does show: the bound is not vacuous


@pytest.mark.parametrize("name", VORBIS)
def test_ogg_vorbis_keeps_the_log_mel_within_a_lossy_codecs_error(built, name):
    """Vorbis discards what it judges inaudible, so samples are not kept; what is kept is the
    waveform to 30 dB SNR (38.8 dB measured with the libvorbis soundfile ships, at its highest
    quality) and the spectrum where the recording's energy is. An error 20 dB below a bin
    moves it by at most 20 log10(1 / (1 - 0.1)) = 0.92 dB (the triangle inequality on the
    mel-weighted spectrum). The bins within 30 dB of the peak, the tones, stay inside that
    (0.16 dB measured); the noise floor near -41 dB is rebuilt coarsely, bin by bin, but
    the mean over all bins stays inside it too (0.30 dB measured)."""
    reference = built.audio[REFERENCE].astype(np.float64)
    error = built.audio[name] - reference
    assert 10 * np.log10(np.sum(reference ** 2) / np.sum(error ** 2)) >= 30.0
    bound_db = 20 * np.log10(1 / (1 - 10 ** (-20 / 20)))
    difference = np.abs(built.log_mel[name] - built.log_mel[REFERENCE])
    assert difference[built.log_mel[REFERENCE] >= -30.0].max() <= bound_db
    assert difference.mean() <= bound_db


@pytest.mark.parametrize("name, channels", [(case[0], case[3]) for case in MULTI_CHANNEL])
def test_multi_channel_files_are_averaged_to_mono(built, name, channels):
    """No channel is the signal; their mean, computed here by hand, is the mono 16-bit
    signal, and so the log-mel is the 16-bit WAV's."""
    written = pcm16()[:, None] + channel_offsets(channels)
    assert sf.info(str(built.folder / name)).channels == channels
    assert not any(np.array_equal(channel, pcm16()) for channel in written.T)
    samples, _ = read_audio(built.folder / name)
    np.testing.assert_array_equal(samples, written.astype(np.float64).mean(axis=1) / 32768)
    np.testing.assert_array_equal(built.audio[name], pcm16())
    np.testing.assert_array_equal(built.log_mel[name], built.log_mel[REFERENCE])


def test_24_bit_samples_cost_only_16_bit_rounding(built):
    """Samples finer than 16 bits read back whole; the build stores them rounded to the
    nearest 16-bit step, so the log-mel training sees is the full-precision one moved by
    16-bit rounding noise at most."""
    samples, _ = read_audio(built.folder / HIGH_RESOLUTION)
    np.testing.assert_array_equal(samples, pcm24() / np.float32(2 ** 31))
    assert np.any(samples * 32768 != np.round(samples * 32768))  # off the 16-bit grid
    stored = built.audio[HIGH_RESOLUTION]
    assert np.abs(stored - samples.astype(np.float64) * 32768).max() <= 0.5
    difference = np.abs(built.log_mel[HIGH_RESOLUTION] - log_mel(samples, MEL))
    assert_within_rounding(difference, rounding_sigma_db(samples, step=1 / 32768))
    assert difference.max() > 0  # the rounding is there, and the bound holds it
