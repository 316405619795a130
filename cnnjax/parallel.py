"""Data parallelism over every device of every process, the same code on a laptop CPU, 8
GPUs, a TPU slice or several hosts.

`config.parallel='jit'` (default): a `Mesh` of all devices with one `data` axis; the global
batch is sharded along it, the train state replicated, and XLA inserts the gradient
all-reduce; BatchNorm statistics are those of the global batch. `'pmap'`: the classic
variant, the state replicated per local device, each device stepping on its slice of the
batch, BatchNorm statistics and gradients summed over the device axis by name.

With several processes each one loads only its share of every global batch (grain shards
by process) and the global batch is assembled from the parts without copying them between
hosts. Batch sizes in configs are global.
"""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Iterable, Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cnnjax.data.device_windows import DeviceWindows
from cnnjax.errors import ConfigError
from cnnjax.train.state import TrainState
from cnnjax.train.losses import Loss
from cnnjax.train.steps import eval_step, norm_stats_step, train_step

PARALLEL_MODES = ("jit", "pmap")
DATA_AXIS = "data"
Batch = dict[str, Any]


def cluster_environment() -> str | None:
    """Which launcher, if any, started this process as one of several: the environment
    variables `jax.distributed.initialize()` reads by itself."""
    env = os.environ
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return "JAX_COORDINATOR_ADDRESS"
    if "SLURM_JOB_ID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return "SLURM"
    if int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return "Open MPI"
    if "," in env.get("TPU_WORKER_HOSTNAMES", ""):
        return "TPU pod"
    return None


def initialize_distributed(coordinator_address: str = "", num_processes: int = 0,
                           process_id: int = -1) -> bool:
    """Joins a multi-process run; must come before anything touches a device. Explicit
    arguments win, then `JAX_COORDINATOR_ADDRESS` with `JAX_NUM_PROCESSES` and
    `JAX_PROCESS_ID`, then what JAX detects (SLURM, Open MPI, TPU pods). Returns whether
    this process is one of several."""
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    if num_processes <= 0 and os.environ.get("JAX_NUM_PROCESSES"):
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id < 0 and os.environ.get("JAX_PROCESS_ID"):
        process_id = int(os.environ["JAX_PROCESS_ID"])
    if coordinator_address and num_processes > 0 and process_id >= 0:
        if num_processes == 1:
            return False
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
        return True
    if coordinator_address or num_processes > 0 or process_id >= 0:
        raise ConfigError("a multi-process run needs all three of --coordinator_address, "
                          "--num_processes and --process_id (or JAX_COORDINATOR_ADDRESS, "
                          "JAX_NUM_PROCESSES, JAX_PROCESS_ID).")
    if cluster_environment() is None:
        return False
    jax.distributed.initialize()
    return jax.process_count() > 1


def check_batch_sizes(batch_size: int, eval_batch_size: int, grad_accum_steps: int,
                      devices: int | None = None) -> None:
    """Raises ConfigError unless the global batch sizes split evenly over the devices (and
    the train batch over micro-batches on each device)."""
    devices = devices or jax.device_count()
    if grad_accum_steps < 1:
        raise ConfigError(f"config.grad_accum_steps={grad_accum_steps} must be at least 1.")
    if batch_size % (devices * grad_accum_steps):
        raise ConfigError(
            f"config.batch_size={batch_size} is global: it must divide evenly over "
            f"{devices} device(s) x {grad_accum_steps} accumulation step(s); try "
            f"{max(1, batch_size // (devices * grad_accum_steps)) * devices * grad_accum_steps}.")
    if eval_batch_size % devices:
        raise ConfigError(f"config.eval_batch_size={eval_batch_size} is global: it must be a "
                          f"multiple of the {devices} device(s).")


@dataclass
class DataParallel:
    """Places train states and batches on the devices and runs compiled steps on them: the
    one place cnnjax compiles `train_step` and `eval_step`, for training, evaluation,
    `lr_find` and prediction alike.

    States live in the device form this mode wants (`place`); `saveable` gives the form
    checkpoints hold (one copy). Batches are numpy arrays of this process's share. With
    `device_windows`, training batches are built on the devices (`put_train_batch`).
    """
    mode: str = "jit"
    loss: Loss = Loss()
    grad_accum_steps: int = 1
    device_windows: DeviceWindows | None = None
    mesh: Mesh = field(init=False)
    _local: NamedSharding = field(init=False, repr=False)  # pmap: one slice per local device
    _train: Callable[..., Any] = field(init=False, repr=False)
    _eval: Callable[..., Any] = field(init=False, repr=False)
    _norm_stats: Callable[..., Any] = field(init=False, repr=False)
    _windows: Callable[..., Any] | None = field(init=False, repr=False, default=None)
    _resident: Any = field(init=False, repr=False, default=None)  # placed spectrograms

    def __post_init__(self) -> None:
        self.mesh = Mesh(np.asarray(jax.devices()), (DATA_AXIS,))
        self._local = NamedSharding(Mesh(np.asarray(jax.local_devices()), (DATA_AXIS,)),
                                    PartitionSpec(DATA_AXIS))
        step = partial(train_step, loss=self.loss, grad_accum_steps=self.grad_accum_steps)
        evaluate = partial(eval_step, loss=self.loss)
        if self.mode == "jit":
            replicated = NamedSharding(self.mesh, PartitionSpec())
            self._train = jax.jit(step, donate_argnums=0, out_shardings=replicated)
            self._eval = jax.jit(evaluate)
            self._norm_stats = jax.jit(norm_stats_step, out_shardings=replicated)
        else:
            self._train = jax.pmap(partial(step, axis_name=DATA_AXIS), axis_name=DATA_AXIS,
                                   donate_argnums=0)
            self._eval = jax.pmap(evaluate, axis_name=DATA_AXIS)
            self._norm_stats = jax.pmap(partial(norm_stats_step, axis_name=DATA_AXIS),
                                        axis_name=DATA_AXIS)
        if self.device_windows is not None:
            self._resident = self.place(self.device_windows.resident)
            self._windows = (jax.jit(self.device_windows, out_shardings=NamedSharding(
                self.mesh, PartitionSpec(DATA_AXIS))) if self.mode == "jit"
                else jax.pmap(self.device_windows, axis_name=DATA_AXIS))

    @property
    def norm_axis_name(self) -> str | None:
        """What the model's BatchNorm must average over: the device axis under pmap."""
        return DATA_AXIS if self.mode == "pmap" else None

    def replicate(self, state: TrainState) -> TrainState:
        """A copy of `state` on every device of every process, as one global array per
        leaf: the form checkpoints are written from and restored into, collectively."""
        target = NamedSharding(self.mesh, PartitionSpec())

        def everywhere(x: Any) -> jax.Array:
            if isinstance(x, jax.Array) and x.sharding == target:
                return x
            # Through the host: every process holds the same value, and device-to-device
            # copies between hosts are not available on every backend.
            return jax.device_put(np.asarray(x), target)

        return jax.tree.map(everywhere, state)

    def place(self, state: TrainState) -> TrainState:
        """A state (fresh, restored or replicated) into the form this mode steps on."""
        if self.mode == "jit":
            return self.replicate(state)
        copies = jax.local_device_count()
        return jax.tree.map(lambda x: self._per_local_device(
            np.broadcast_to(np.asarray(x), (copies, *np.shape(x)))), state)

    def saveable(self, state: TrainState) -> TrainState:
        """The state as checkpoints hold it (see `replicate`)."""
        if self.mode == "jit":
            return state
        return self.replicate(jax.tree.map(lambda x: x[0], state))

    def put_batch(self, batch: Batch) -> Batch:
        """This process's share of a global batch, onto the devices."""
        if self.mode == "jit":
            sharding = NamedSharding(self.mesh, PartitionSpec(DATA_AXIS))
            return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
                    for k, v in batch.items()}
        copies = jax.local_device_count()
        return {k: self._per_local_device(np.asarray(v).reshape(copies, -1, *np.shape(v)[1:]))
                for k, v in batch.items()}

    def put_train_batch(self, batch: Batch) -> Batch:
        """A training batch onto the devices: `put_batch`, then with `device_windows` the
        windows cut and augmented there from the batch's `{'index', 'label', 'seed'}`."""
        placed = self.put_batch(batch)
        return placed if self._windows is None else self._windows(self._resident, placed)

    def _per_local_device(self, stacked: np.ndarray) -> jax.Array:
        """[local devices, ...] -> one slice per local device, as pmap takes its inputs."""
        return jax.device_put(stacked, self._local)

    def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, Any]]:
        """One optimizer step on a placed batch. Metrics stay on the devices (reading them
        waits for the step): scalars under jit, one copy per device under pmap."""
        state, metrics = self._train(state, batch)
        if self.mode == "pmap":
            metrics = {k: v[0] for k, v in metrics.items()}
        return state, metrics

    def evaluate_batch(self, state: TrainState, global_batch: Batch) -> dict[str, np.ndarray]:
        """`eval_step` on a whole global batch (every process holds the same one); returns
        the outputs of all of it, as numpy, on every process."""
        out = self._eval(state, self.put_batch(_process_share(global_batch)))
        if self.mode == "pmap":  # [local devices, per device, ...] -> this process's share
            out = {k: np.asarray(v).reshape(-1, *v.shape[2:]) for k, v in out.items()}
        if jax.process_count() > 1:
            return multihost_utils.process_allgather(out, tiled=True)
        return jax.device_get(out)

    def norm_statistics(self, state: TrainState, global_batch: Batch) -> Any:
        """`norm_stats_step` on a whole global batch (every process holds the same one): the
        batch's BatchNorm statistics, as numpy, on every process. Under pmap a model built
        with `norm_axis_name` gives every device the global statistics; one built without
        gives each its share's, and their mean is taken (equal shares)."""
        stats = self._norm_stats(state, self.put_batch(_process_share(global_batch)))
        if self.mode == "pmap":
            stats = jax.tree.map(lambda x: x.mean(0), stats)
        return jax.device_get(stats)


def _process_share(global_batch: Batch) -> Batch:
    """This process's contiguous slice of a batch every process holds whole."""
    count, index = jax.process_count(), jax.process_index()
    return {k: np.split(np.asarray(v), count)[index] for k, v in global_batch.items()}


def prefetch_to_devices(batches: Iterable[Batch], put: Callable[[Batch], Batch],
                        state_of: Callable[[], Any], size: int = 2
                        ) -> Iterator[tuple[Batch, Any]]:
    """Yields (placed batch, the iterator's state right after it), keeping `size` batches
    on their way to the devices while the current step runs. The state is read as each
    batch is taken, so a checkpoint saved after step n resumes at batch n + 1 however far
    ahead the prefetch ran."""
    queue: collections.deque[tuple[Batch, Any]] = collections.deque()
    for batch in batches:
        queue.append((put(batch), state_of()))
        if len(queue) > size:
            yield queue.popleft()
    yield from queue
