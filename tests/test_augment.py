"""Train-only augmentation: shapes, ranges, seeding, and what each transform does to an image."""

import numpy as np

from semdefect.training.augment import augment_batch, zoom_batch


def test_augmentation_keeps_shape_and_range_and_is_seeded():
    x = np.random.default_rng(0).uniform(0, 1, (8, 32, 32, 1)).astype(np.float32)
    a = augment_batch(x, np.random.default_rng(1), noise_std=0.05)
    b = augment_batch(x, np.random.default_rng(1), noise_std=0.05)
    c = augment_batch(x, np.random.default_rng(2), noise_std=0.05)
    assert a.shape == x.shape and a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, x)


def test_augmentation_without_noise_only_moves_pixels_and_levels():
    # A flip or rotation keeps the multiset of pixel values; brightness/contrast is affine per image.
    x = np.random.default_rng(0).uniform(0.3, 0.7, (4, 16, 16, 1)).astype(np.float32)
    y = augment_batch(x, np.random.default_rng(3), noise_std=0.0)
    for before, after in zip(x, y):
        slope, offset = np.polyfit(np.sort(before.ravel()), np.sort(after.ravel()), 1)
        assert 0.75 < slope < 1.3 and np.allclose(np.sort(before.ravel()) * slope + offset, np.sort(after.ravel()),
                                                  atol=1e-4)


def test_zoom_magnifies_a_crop_up_to_the_given_factor():
    # A linear ramp stays a ramp under a crop-and-resize; magnified by z, it rises 1/z as much per pixel, and
    # z is in [1, zoom]. Zoom 1 leaves the image as it was.
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))[None, :, :, None].repeat(6, axis=0)
    same = zoom_batch(ramp, np.random.default_rng(0), 1.0)
    np.testing.assert_allclose(same, ramp, atol=1e-5)
    zoomed = zoom_batch(ramp, np.random.default_rng(0), 2.0)
    slopes = np.diff(zoomed[:, 32, 8:56, 0], axis=1).mean(axis=1) / np.diff(ramp[0, 32, 8:56, 0]).mean()
    assert np.all(slopes >= 0.49) and np.all(slopes <= 1.01) and slopes.min() < 0.95
    assert zoomed.dtype == np.float32 and zoomed.min() >= 0 and zoomed.max() <= 1


def test_random_convolution_keeps_shape_and_range_and_follows_the_seed():
    from semdefect.training.augment import random_convolution

    image = np.random.default_rng(0).random((32, 32), dtype=np.float32)
    first = random_convolution(image, np.random.default_rng(5))
    again = random_convolution(image, np.random.default_rng(5))
    assert first.shape == image.shape and first.dtype == np.float32
    assert first.min() >= 0.0 and first.max() <= 1.0
    np.testing.assert_array_equal(first, again)
    assert any(not np.allclose(random_convolution(image, np.random.default_rng(s)), image) for s in range(5))
