"""Keras-style image augmentation: one affine warp per image on the host (scipy, what the
grain pipeline runs) against the same warp batched in JAX on the default device.

    python -m benchmarks.image_augment [--batch 32] [--size 150] [--repeats 7]
                                       [--out benchmarks/results/image_augment.json]

Both warp a batch of `--batch` RGB float images of `--size`^2 with random shift 0.2, shear
20 degrees and zoom 0.2 (bilinear, nearest-edge fill). The host figure is
`cnnjax.data.augment.random_affine` per image; the JAX figure is `map_coordinates` over the
batch with the same matrices, jitted, with and without copying the batch to the device and
back. Times are the minimum and median over `--repeats` batches after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import step_times
from cnnjax.data.augment import keras_affine, random_affine

RANGES = {"width_shift_range": 0.2, "height_shift_range": 0.2, "shear_range": 20.0,
          "zoom_range": 0.2}


def _timed(run: Callable[[], object], repeats: int) -> dict[str, float]:
    times = step_times(run, repeats, warmup=1)
    return {"min_ms": 1e3 * min(times), "median_ms": 1e3 * statistics.median(times)}


@jax.jit
def _warp_batch(images: jax.Array, matrices: jax.Array, offsets: jax.Array) -> jax.Array:
    height, width = images.shape[1:3]
    rows, cols = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                              jnp.arange(width, dtype=jnp.float32), indexing="ij")

    def one(image: jax.Array, matrix: jax.Array, offset: jax.Array) -> jax.Array:
        where = [matrix[i, 0] * rows + matrix[i, 1] * cols + offset[i] for i in range(2)]
        return jnp.stack([jax.scipy.ndimage.map_coordinates(image[..., c], where, order=1,
                                                             mode="nearest")
                          for c in range(image.shape[-1])], axis=-1)

    return jax.vmap(one)(images, matrices, offsets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/image_augment.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (args.batch, args.size, args.size, 3)).astype(np.float32)
    host = _timed(lambda: [random_affine(x, np.random.default_rng(i), **RANGES)
                           for i, x in enumerate(images)], args.repeats)
    maps = [keras_affine(images.shape[1:], shift=tuple(rng.uniform(-30, 30, 2)),
                         shear=rng.uniform(-20, 20), zoom=tuple(rng.uniform(0.8, 1.2, 2)))
            for _ in range(args.batch)]
    matrices = jnp.asarray(np.stack([m for m, _ in maps]), jnp.float32)
    offsets = jnp.asarray(np.stack([o for _, o in maps]), jnp.float32)
    on_device = jnp.asarray(images)
    device = _timed(lambda: _warp_batch(on_device, matrices, offsets).block_until_ready(),
                    args.repeats)
    round_trip = _timed(lambda: np.asarray(_warp_batch(jnp.asarray(images), matrices, offsets)),
                        args.repeats)
    result = {"device": jax.devices()[0].device_kind, "batch": args.batch, "size": args.size,
              "host_scipy_per_batch": host, "jax_per_batch_on_device": device,
              "jax_per_batch_with_transfers": round_trip}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
