"""preprocess.filters and preprocess.noise against scipy and brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from neocascade.preprocess.filters import gaussian_filter, gaussian_kernel1d, mask_invalid
from neocascade.preprocess.noise import MAD_TO_SIGMA, local_noise_map, robust_noise


def _normalised_reference(image: np.ndarray, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Normalised convolution in float64 with scipy (mode='reflect')."""
    valid = np.isfinite(image)
    num = ndi.gaussian_filter(np.where(valid, image, 0.0).astype(np.float64), sigma, mode="reflect", truncate=truncate)
    den = ndi.gaussian_filter(valid.astype(np.float64), sigma, mode="reflect", truncate=truncate)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[~valid | (den == 0)] = np.nan
    return out


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (64, 48), (130, 67)])
@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0, 3.3])
def test_gaussian_equals_scipy_reflect_without_nan(shape, sigma):
    image = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    out = gaussian_filter(image, sigma=sigma)
    ref = ndi.gaussian_filter(image.astype(np.float64), sigma, mode="reflect")
    assert out.dtype == np.float32 and out.shape == shape
    np.testing.assert_allclose(out, ref, rtol=0, atol=2e-6)


def test_gaussian_truncate_and_kernel_match_scipy():
    image = np.random.default_rng(2).normal(size=(40, 33)).astype(np.float32)
    out = gaussian_filter(image, sigma=1.5, truncate=2.0)
    np.testing.assert_allclose(out, ndi.gaussian_filter(image.astype(np.float64), 1.5, truncate=2.0), atol=2e-6)
    taps = gaussian_kernel1d(1.5, 2.0)
    assert taps.size == 2 * int(2.0 * 1.5 + 0.5) + 1 and taps.sum() == pytest.approx(1.0)


def test_gaussian_nan_matches_normalised_reference():
    rng = np.random.default_rng(3)
    image = rng.normal(size=(150, 90)).astype(np.float32)
    image[rng.random(image.shape) < 0.05] = np.nan
    image[:, :4] = np.nan  # a dead border
    image[70:75, 40:50] = np.inf
    out = gaussian_filter(image, sigma=1.2)
    ref = _normalised_reference(image, 1.2)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_allclose(out, ref, atol=3e-6, equal_nan=True)


def test_nan_does_not_bleed_and_stays_nan():
    image = np.zeros((41, 41), dtype=np.float32)
    image[20, 21] = 100.0
    masked = image.copy()
    masked[20, 20] = np.nan
    sigma = 1.0
    clean = gaussian_filter(image, sigma=sigma)
    out = gaussian_filter(masked, sigma=sigma)
    assert np.isnan(out[20, 20]) and np.isnan(out).sum() == 1
    rr, cc = np.mgrid[:41, :41]
    far = np.maximum(abs(rr - 20), abs(cc - 20)) > 4 * sigma  # beyond the kernel of the masked pixel
    np.testing.assert_allclose(out[far], clean[far], rtol=1e-6, atol=1e-12)  # den = 1 to rounding
    # Next to the masked pixel the bright pixel's share is renormalised, not diluted by a 0.
    assert out[20, 21] > clean[20, 21]


def test_all_nan_gives_nan_and_isolated_valid_pixel_keeps_value():
    assert np.isnan(gaussian_filter(np.full((6, 5), np.nan), sigma=1.0)).all()
    image = np.full((30, 30), np.nan, dtype=np.float32)
    image[15, 15] = 7.0
    out = gaussian_filter(image, sigma=1.0)
    assert out[15, 15] == pytest.approx(7.0) and np.isnan(out).sum() == 30 * 30 - 1


def test_sigma_zero_is_a_float32_copy_and_input_untouched():
    image = np.arange(12, dtype=np.float64).reshape(3, 4)
    image[1, 1] = np.nan
    before = image.copy()
    out = gaussian_filter(image, sigma=0)
    assert out.dtype == np.float32 and out is not image
    np.testing.assert_array_equal(out, image.astype(np.float32))
    gaussian_filter(image, sigma=2.0)
    np.testing.assert_array_equal(image, before)


def test_gaussian_read_only_and_non_contiguous_input():
    image = np.random.default_rng(4).normal(size=(30, 40)).astype(np.float32)
    view = image[:, ::2]
    view.flags.writeable = False
    np.testing.assert_allclose(gaussian_filter(view, sigma=1.0), ndi.gaussian_filter(view.astype(np.float64), 1.0), atol=2e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image": np.zeros(5), "sigma": 1.0}, "image: must be a 2-D array"),
        ({"image": np.zeros((0, 3)), "sigma": 1.0}, "image: must not be empty"),
        ({"image": np.zeros((3, 3), dtype=complex), "sigma": 1.0}, "image: must hold real numbers"),
        ({"image": np.zeros((3, 3)), "sigma": -1.0}, "sigma: must be a finite number >= 0"),
        ({"image": np.zeros((3, 3)), "sigma": float("nan")}, "sigma"),
        ({"image": np.zeros((3, 3)), "sigma": 1.0, "truncate": 0.0}, "truncate"),
    ],
)
def test_gaussian_bad_input(kwargs, match):
    image = kwargs.pop("image")
    with pytest.raises(ValueError, match=match):
        gaussian_filter(image, **kwargs)


def test_mask_invalid():
    image = np.array([[0.0, 1.0, np.inf], [-np.inf, np.nan, -2.5]])
    out = mask_invalid(image)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(out), [[True, False, True], [True, True, False]])
    assert out[0, 1] == 1.0 and out[1, 2] == -2.5 and image[0, 0] == 0.0
    keep_zero = mask_invalid(image, zero_is_dead=False)
    assert keep_zero[0, 0] == 0.0 and np.isnan(keep_zero[0, 2])
    with pytest.raises(ValueError, match="image: must be a 2-D array"):
        mask_invalid(np.zeros((2, 2, 2)))


def test_robust_noise_exact_and_empty():
    values = np.array([1.0, 2.0, 3.0, 4.0, 100.0, np.nan, np.inf])  # median 3, |dev| 2,1,0,1,97 -> MAD 1
    assert robust_noise(values) == pytest.approx(MAD_TO_SIGMA * 1.0)
    assert np.isnan(robust_noise(np.full((3, 3), np.nan)))
    assert np.isnan(robust_noise(np.zeros(0)))
    gauss = np.random.default_rng(5).normal(scale=3.0, size=200_000)
    assert robust_noise(gauss) == pytest.approx(3.0, rel=0.02)


@pytest.mark.parametrize("shape", [(64, 64), (70, 45), (7, 200)])
@pytest.mark.parametrize("box", [1, 8, 16, 300])
def test_local_noise_map_matches_per_tile_loop(shape, box):
    rng = np.random.default_rng(6)
    image = rng.normal(size=shape).astype(np.float32)
    image[rng.random(shape) < 0.1] = np.nan
    image[: min(16, shape[0]), : min(16, shape[1])] = np.nan  # a whole tile may be masked
    out = local_noise_map(image, box=box)
    assert out.shape == shape and out.dtype == np.float32
    ref = np.empty(shape)
    for r0 in range(0, shape[0], box):
        for c0 in range(0, shape[1], box):
            ref[r0 : r0 + box, c0 : c0 + box] = robust_noise(image[r0 : r0 + box, c0 : c0 + box])
    np.testing.assert_allclose(out, ref, rtol=1e-5, equal_nan=True)


def test_tile_noise_workers_and_infinities():
    """Tile rows shared out to threads give the same grid; +-inf pixels count as masked."""
    from neocascade.preprocess.noise import _tile_noise

    rng = np.random.default_rng(8)
    image = rng.normal(size=(97, 61)).astype(np.float32)
    image[rng.random(image.shape) < 0.05] = np.inf
    one = _tile_noise(image, 16, workers=1)
    np.testing.assert_array_equal(_tile_noise(image, 16, workers=4), one)
    masked = np.where(np.isfinite(image), image, np.nan)
    assert one[0, 0] == pytest.approx(robust_noise(masked[:16, :16]), rel=1e-6)


def test_local_noise_map_bad_box():
    with pytest.raises(ValueError, match="box: must be a positive integer"):
        local_noise_map(np.zeros((4, 4)), box=0)


def test_gaussian_workers_give_identical_results():
    rng = np.random.default_rng(7)
    image = rng.normal(size=(90, 70)).astype(np.float32)
    image[rng.random(image.shape) < 0.02] = np.nan
    one = gaussian_filter(image, sigma=1.0, workers=1)
    np.testing.assert_array_equal(gaussian_filter(image, sigma=1.0, workers=3), one)
    with pytest.raises(ValueError, match="workers: must be a positive integer"):
        gaussian_filter(image, sigma=1.0, workers=0)


@pytest.mark.parametrize("shape", [(3, 3), (40, 5), (5, 40), (37, 53)])
@pytest.mark.parametrize("sigma", [0.7, 2.0])
@pytest.mark.parametrize("where", ["left", "right", "corner", "sparse", "two_clusters"])
def test_gaussian_masked_windows_match_reference(shape, sigma, where):
    rng = np.random.default_rng([*shape, len(where)])
    image = rng.normal(size=shape).astype(np.float32)
    h, w = shape
    if where == "left":
        image[:, 0] = np.nan
    elif where == "right":
        image[h // 3 :, w - 1] = np.nan
    elif where == "corner":
        image[-2:, -2:] = np.nan
    elif where == "sparse":
        image[rng.random(shape) < 0.03] = np.nan
    else:
        image[h // 2, 0] = image[h // 2, w - 1] = np.nan
    ref = _normalised_reference(image, sigma)
    out = gaussian_filter(image, sigma=sigma)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_allclose(out, ref, atol=3e-6, equal_nan=True)
