"""Scalars as TensorBoard event files, without TensorFlow.

TensorBoard's own pure-Python event writer and protos write the files, so what
`tensorboard --logdir <workdir>` shows is exactly what was logged; the import is light
(no TensorFlow, no torch), so a run pays nothing for logging it does not look at.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from types import TracebackType

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter


class SummaryWriter:
    """Appends scalar summaries to a new event file in `logdir` (created if absent).

    A resumed run opens another file in the same folder; TensorBoard merges them by step.
    Each `scalars` call is flushed, so a run killed between epochs loses nothing written.
    """

    def __init__(self, logdir: str | os.PathLike):
        self.logdir = os.fspath(logdir)
        self._writer = EventFileWriter(self.logdir)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Logs every `tag: value` of `values` at `step`, as one event."""
        summary = summary_pb2.Summary(value=[
            summary_pb2.Summary.Value(tag=tag, simple_value=float(value))
            for tag, value in values.items()])
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
