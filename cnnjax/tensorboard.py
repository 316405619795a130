"""Scalars, text, images and hyperparameters as TensorBoard event files, without TensorFlow.

TensorBoard's own pure-Python event writer and protos write the files, so what
`tensorboard --logdir <workdir>` shows is exactly what was logged; the import is light
(no TensorFlow, no torch), so a run pays nothing for logging it does not look at.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Mapping
from types import TracebackType

from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.text import metadata as text_metadata
from tensorboard.summary.writer.event_file_writer import EventFileWriter

HParamValue = bool | int | float | str
PNG_COLORSPACE_RGBA = 4  # summary_pb2.Summary.Image.colorspace of an RGBA PNG
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the PNG's header chunk, which follows the signature: the image
    summary carries them so that TensorBoard can lay out the image before decoding it."""
    if png[:8] != PNG_SIGNATURE:
        raise ValueError("TensorBoard images are written as PNG; these bytes are not one.")
    width, height = struct.unpack(">II", png[16:24])
    return width, height


class SummaryWriter:
    """Appends summaries to a new event file in `logdir` (created if absent).

    A resumed run opens another file in the same folder; TensorBoard merges them by step.
    Each call is flushed, so a run killed between two of them loses nothing written.
    """

    def __init__(self, logdir: str | os.PathLike):
        self.logdir = os.fspath(logdir)
        self._writer = EventFileWriter(self.logdir)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Logs every `tag: value` of `values` at `step`, as one event."""
        self._write(step, summary_pb2.Summary(value=[
            summary_pb2.Summary.Value(tag=tag, simple_value=float(value))
            for tag, value in values.items()]))

    def text(self, step: int, tag: str, markdown: str) -> None:
        """Logs `markdown` for TensorBoard's Text tab (which renders it as Markdown)."""
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING,
                                        string_val=[markdown.encode()])
        metadata = text_metadata.create_summary_metadata(display_name=tag, description="")
        self._write(step, summary_pb2.Summary(value=[
            summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=metadata)]))

    def image(self, step: int, tag: str, png: bytes) -> None:
        """Logs an RGBA PNG (as matplotlib writes them) for TensorBoard's Images tab."""
        width, height = _png_size(png)
        image = summary_pb2.Summary.Image(width=width, height=height,
                                          colorspace=PNG_COLORSPACE_RGBA,
                                          encoded_image_string=png)
        self._write(step, summary_pb2.Summary(value=[
            summary_pb2.Summary.Value(tag=tag, image=image)]))

    def hparams(self, values: Mapping[str, HParamValue]) -> None:
        """Starts an HParams session with `values`. No experiment summary is written: the
        HParams tab then gathers the hyperparameters from every run's session and takes each
        run's scalars as its metrics, so runs with different configs under one logdir all
        appear in one table."""
        self._write(0, hparams_summary.hparams_pb(dict(values), start_time_secs=time.time()))

    def _write(self, step: int, summary: summary_pb2.Summary) -> None:
        self._writer.add_event(event_pb2.Event(step=int(step), wall_time=time.time(),
                                               summary=summary))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> SummaryWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
