"""Audio: defensive reading (io), log-mel features (features: librosa on the host;
frontend: JAX on the device), synthetic heart sounds (synth).

A bottom layer beside `cnnjax.models`: librosa and soundfile, no data pipeline or training.
"""

from cnnjax.audio.features import MelSettings, crop_frames, load_audio, log_mel, to_image
from cnnjax.audio.frontend import MelFrontend, log_mel_jax, log_mel_many
from cnnjax.audio.io import AudioError, read_audio
from cnnjax.audio.synth import CLASSES as SYNTH_CLASSES
from cnnjax.audio.synth import SynthSettings, synthesize, write_dataset

__all__ = ["AudioError", "MelFrontend", "MelSettings", "SYNTH_CLASSES", "SynthSettings",
           "crop_frames", "load_audio", "log_mel", "log_mel_jax", "log_mel_many", "read_audio",
           "synthesize", "to_image", "write_dataset"]
