"""What the trainer, evaluation and reports read from data, declared once.

`get_datasets(config)` returns a `Datasets`: the spectrograms' `SpectrogramDatasets`
(`cnnjax.data.datasets`) and the images' `ImageDatasets` (`cnnjax.data.image_datasets`)
both implement it, so nothing above `cnnjax.data` asks which one it holds.
"""

from typing import TYPE_CHECKING, Iterator, NotRequired, Protocol, TypedDict, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from cnnjax.data.device_windows import DeviceWindows


class TrainBatch(TypedDict):
    """One process's share of a global training batch of `b` examples."""
    image: np.ndarray  # float32 [b, H, W, C]: `Datasets.input_shape` per example
    label: np.ndarray  # int32 [b]: class index
    target: NotRequired[np.ndarray]  # float32 [b]: the regression target, where the split has one
    mix_label: NotRequired[np.ndarray]  # int32 [b]: with mixup, the class mixed in
    mix_weight: NotRequired[np.ndarray]  # float32 [b]: with mixup, the weight of `label`


class EvalBatch(TypedDict):
    """Evaluation windows in validation order, always `b = eval_batch_size` rows (the last
    batch padded): a recording may give several windows, an image gives one."""
    image: np.ndarray  # float32 [b, H, W, C]
    label: np.ndarray  # int32 [b]: the class of the window's record
    record: np.ndarray  # int32 [b]: the window's record, an index into `Datasets.val`
    mask: np.ndarray  # bool [b]: False on padding rows
    target: NotRequired[np.ndarray]  # float32 [b]: the record's target, where `val` has them


class Split(Protocol):
    """The records (recordings or images) of the training or the validation side."""
    labels: np.ndarray  # int32 [records]: class indices into `Datasets.class_names`
    targets: np.ndarray | None  # float32 [records] regression targets; None: the source has none

    def __len__(self) -> int:
        """Records, not windows."""
        ...


class TrainBatches(Protocol):
    """An epoch's training batches, resumable mid-epoch (grain's iterator)."""

    def __iter__(self) -> Iterator[TrainBatch]: ...

    def __next__(self) -> TrainBatch: ...

    def get_state(self) -> bytes:
        """Where the epoch stands: passed back to `Datasets.train_batches` it resumes at
        exactly the next batch."""
        ...


@runtime_checkable
class Datasets(Protocol):
    """One experiment's training and validation data and how to batch them."""
    class_names: tuple[str, ...]
    train: Split
    val: Split
    val_file_names: list[str]  # one per `val` record, in its order: reports name records

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """`(H, W, C)` of one model input."""
        ...

    @property
    def device_windows(self) -> "DeviceWindows | None":
        """None: `train_batches` yields finished `TrainBatch`es. Otherwise it yields
        `{'index', 'label', 'seed'}` and `DataParallel` builds the batches on the devices
        with this."""
        ...

    @property
    def steps_per_epoch(self) -> int:
        """Full global batches in one epoch of `train` (the remainder is dropped)."""
        ...

    def train_batches(self, epoch: int, state: bytes | None = None) -> TrainBatches:
        """Epoch `epoch`'s shuffled, augmented batches (the same for the same seed and
        epoch); `state` from `TrainBatches.get_state` resumes mid-epoch."""
        ...

    def eval_batches(self) -> Iterator[EvalBatch]:
        """Every `val` record's windows, in order."""
        ...
