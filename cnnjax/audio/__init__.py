"""Audio: loading, log-mel features, synthetic heart sounds."""

from cnnjax.audio.features import MelSettings, crop_frames, load_audio, log_mel, to_image
from cnnjax.audio.synth import CLASSES as SYNTH_CLASSES
from cnnjax.audio.synth import SynthSettings, synthesize, write_dataset

__all__ = ["MelSettings", "SYNTH_CLASSES", "SynthSettings", "crop_frames", "load_audio",
           "log_mel", "synthesize", "to_image", "write_dataset"]
