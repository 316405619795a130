"""Keras ImageDataGenerator-style augmentation against hand-computed cases: the inverse-map
convention, exact pixel shifts with nearest-edge fill, zoom and shear on linear ramps."""

import numpy as np

from cnnjax.data.augment import keras_affine, random_affine, warp


def ramp(height, width, axis):
    """A float image whose value is its column (axis=1) or row (axis=0) index."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    return (cols if axis == 1 else rows)[..., None]


def test_no_shift_no_shear_and_zoom_one_is_the_identity():
    image = np.random.default_rng(0).uniform(0, 255, (9, 13, 3)).astype(np.float32)
    matrix, offset = keras_affine(image.shape)
    np.testing.assert_array_equal(matrix, np.eye(2))
    np.testing.assert_array_equal(offset, [0.0, 0.0])
    np.testing.assert_array_equal(warp(image, matrix, offset), image)


def test_a_shift_of_k_pixels_moves_a_pattern_by_k_like_keras():
    image = np.zeros((20, 30, 2), np.float32)
    image[5:8, 10:14] = 1.0
    image[:, -1, 1] = np.arange(20) + 100.0  # the last column, to see the nearest-edge fill
    # Keras' inverse map: output pixel (r, c) samples input (r + ty, c + tx), so a positive
    # shift moves the content up / left, and what comes in is the nearest edge pixel.
    left = warp(image, *keras_affine(image.shape, shift=(0, 3)))
    np.testing.assert_array_equal(left, image[:, np.minimum(np.arange(30) + 3, 29)])
    assert np.argwhere(left[..., 0]).min(0).tolist() == [5, 7]
    np.testing.assert_array_equal(left[:, -3:, 1], np.repeat(image[:, -1:, 1], 3, axis=1))
    down = warp(image, *keras_affine(image.shape, shift=(-2, 0)))
    np.testing.assert_array_equal(down, image[np.maximum(np.arange(20) - 2, 0)])
    assert np.argwhere(down[..., 0]).min(0).tolist() == [7, 10]


def test_zoom_scales_about_the_centre_and_above_one_shows_more():
    image = ramp(11, 21, axis=1)  # centre column 10
    out = warp(image, *keras_affine(image.shape, zoom=(1.0, 2.0)))[..., 0]
    # Output column c samples input column 2 * (c - 10) + 10, held at the edges.
    expected = np.clip(2.0 * np.arange(21) - 10.0, 0, 20)
    np.testing.assert_allclose(out, np.tile(expected, (11, 1)), atol=1e-5)
    shrunk = warp(ramp(11, 21, axis=0), *keras_affine((11, 21), zoom=(0.5, 1.0)))[..., 0]
    np.testing.assert_allclose(shrunk[:, 0], 0.5 * np.arange(11) + 2.5, atol=1e-5)


def test_shear_is_in_degrees_and_slants_columns_along_rows():
    angle = 30.0  # degrees, as Keras' shear_range
    sin, cos = 0.5, np.sqrt(3) / 2
    cols = warp(ramp(21, 21, axis=1), *keras_affine((21, 21), shear=angle))[..., 0]
    rows = warp(ramp(21, 21, axis=0), *keras_affine((21, 21), shear=angle))[..., 0]
    r, c = np.mgrid[0:21, 0:21]
    # x_in = x - sin(shear) * (y - cy), y_in = cos(shear) * (y - cy) + cy, edges held.
    np.testing.assert_allclose(cols, np.clip(c - sin * (r - 10), 0, 20), atol=1e-4)
    np.testing.assert_allclose(rows, np.clip(cos * (r - 10) + 10, 0, 20), atol=1e-4)


def test_random_affine_draws_within_its_ranges_and_repeats_per_seed():
    image = np.zeros((40, 40, 1), np.float32)
    image[:, 20] = 255.0  # one bright column
    moved = []
    for seed in range(40):
        out = random_affine(image, np.random.default_rng(seed), width_shift_range=0.25)
        np.testing.assert_array_equal(
            out, random_affine(image, np.random.default_rng(seed), width_shift_range=0.25))
        moved.append(np.average(np.arange(40), weights=out[0, :, 0]) - 20)
    assert max(np.abs(moved)) <= 0.25 * 40 and np.std(moved) > 3


def test_random_affine_draws_the_same_numbers_whatever_is_switched_on():
    image = np.random.default_rng(0).uniform(0, 255, (8, 6, 3)).astype(np.float32)
    states = []
    for ranges in ({}, {"shear_range": 5.0, "zoom_range": 0.1, "horizontal_flip": True}):
        rng = np.random.default_rng(7)
        random_affine(image, rng, **ranges)
        states.append(rng.bit_generator.state["state"]["state"])
    assert states[0] == states[1]
    same = random_affine(image, np.random.default_rng(7))
    np.testing.assert_array_equal(same, image)
    flips = {random_affine(image, np.random.default_rng(s), horizontal_flip=True).tobytes()
             for s in range(10)}
    assert flips == {image.tobytes(), image[:, ::-1].tobytes()}
