"""Model-input assembly, normalisation and dihedral augmentation on hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neocascade.data.transforms import assemble_inputs, augment, dihedral


def _cutouts() -> np.ndarray:
    """Two 3x3 cutouts: channel 0 = 0..8 (+100 for the second), channel 1 = 10 * that."""
    base = np.arange(9, dtype=np.float32).reshape(3, 3)
    filt = np.stack([base, base + 100])
    return np.stack([filt, 10 * filt], axis=1)  # (2, 2, 3, 3)


def test_channels_are_picked_in_the_given_order():
    cut = _cutouts()
    x = assemble_inputs(cut, channels=["raw", "filtered"], normalize="none")
    assert x.dtype == np.float32 and x.shape == (2, 2, 3, 3)
    np.testing.assert_array_equal(x[:, 0], cut[:, 1])
    np.testing.assert_array_equal(x[:, 1], cut[:, 0])
    only = assemble_inputs(cut.astype(np.float16), channels=["filtered"], normalize="none")
    assert only.dtype == np.float32 and only.shape == (2, 1, 3, 3)
    np.testing.assert_array_equal(only[:, 0], cut[:, 0])


def test_input_is_not_modified():
    cut = _cutouts()
    before = cut.copy()
    assemble_inputs(cut, channels=["filtered", "raw"], normalize="cutout")
    np.testing.assert_array_equal(cut, before)


def test_image_noise_divides_each_cutout_by_its_noise():
    cut = _cutouts()
    x = assemble_inputs(cut, channels=["filtered"], normalize="image_noise", image_noise=np.array([2.0, 4.0]))
    np.testing.assert_array_equal(x[0, 0], cut[0, 0] / 2)
    np.testing.assert_array_equal(x[1, 0], cut[1, 0] / 4)
    scalar = assemble_inputs(cut, channels=["filtered"], normalize="image_noise", image_noise=2.0)
    np.testing.assert_array_equal(scalar[:, 0], cut[:, 0] / 2)


def test_local_noise_and_zero_noise():
    cut = _cutouts()
    x = assemble_inputs(cut, channels=["raw"], normalize="local_noise", local_noise=np.array([0.0, 5.0]))
    np.testing.assert_array_equal(x[0, 0], cut[0, 1])  # zero noise: left as it is
    np.testing.assert_array_equal(x[1, 0], cut[1, 1] / 5)


def test_snr_puts_each_channel_in_its_own_noise_units():
    cut = _cutouts()
    image, local = np.array([2.0, 4.0]), np.array([0.5, 0.0])
    x = assemble_inputs(cut, channels=["raw", "filtered"], normalize="snr", image_noise=image, local_noise=local)
    np.testing.assert_array_equal(x[0, 0], cut[0, 1] / 2)  # raw over the image's noise
    np.testing.assert_array_equal(x[0, 1], cut[0, 0] / 0.5)  # filtered over the local (filtered) noise
    np.testing.assert_array_equal(x[1, 0], cut[1, 1] / 4)
    np.testing.assert_array_equal(x[1, 1], cut[1, 0])  # zero noise: left as it is
    one = assemble_inputs(cut, channels=["filtered"], normalize="snr", image_noise=3.0, local_noise=0.5)
    np.testing.assert_array_equal(one[:, 0], cut[:, 0] / 0.5)


def test_cutout_normalisation_exact_values():
    cut = _cutouts()
    x = assemble_inputs(cut, channels=["filtered", "raw"], normalize="cutout")
    # 0..8: median 4, MAD = median(|k - 4|) = 2, sigma = 2 * 1.4826
    expected = (np.arange(9).reshape(3, 3) - 4) / (2 * 1.4826)
    np.testing.assert_allclose(x[0, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(x[1, 0], expected, rtol=1e-6)  # the offset of 100 is removed
    np.testing.assert_allclose(x[0, 1], expected, rtol=1e-6)  # the factor 10 is removed


def test_cutout_normalisation_of_a_constant_cutout_only_shifts():
    cut = np.full((1, 2, 3, 3), 7.0, dtype=np.float32)
    x = assemble_inputs(cut, channels=["filtered"], normalize="cutout")
    np.testing.assert_array_equal(x, np.zeros((1, 1, 3, 3), dtype=np.float32))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channels": ["filtered", "diff"], "normalize": "none"}, "channels: unknown channel 'diff'"),
        ({"channels": [], "normalize": "none"}, "channels: must be a non-empty list"),
        ({"channels": ["raw", "raw"], "normalize": "none"}, "channels: a channel is repeated"),
        ({"channels": ["raw"], "normalize": "zscore"}, "normalize: must be one of"),
        ({"channels": ["raw"], "normalize": "image_noise"}, "image_noise: required"),
        ({"channels": ["raw"], "normalize": "image_noise", "image_noise": np.ones(3)}, r"image_noise: must be a float or have shape \(2,\)"),
        ({"channels": ["raw"], "normalize": "snr", "image_noise": 1.0}, "local_noise: required when normalize='snr'"),
        ({"channels": ["raw"], "normalize": "snr", "local_noise": 1.0}, "image_noise: required when normalize='snr'"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        assemble_inputs(_cutouts(), **kwargs)


def test_bad_cutout_shape():
    with pytest.raises(ValueError, match=r"cutouts: must have shape \(N, 2, S, S\)"):
        assemble_inputs(np.zeros((2, 3, 3)), channels=["raw"], normalize="none")


def test_dihedral_group_has_eight_distinct_elements():
    a = np.arange(9).reshape(3, 3)
    images = {dihedral(a, k).tobytes() for k in range(8)}
    assert len(images) == 8
    np.testing.assert_array_equal(dihedral(a, 4), a[:, ::-1])
    np.testing.assert_array_equal(dihedral(a, 1), np.rot90(a))


@pytest.mark.parametrize("as_torch", [False, True])
def test_augment_keeps_pixel_multiset_centre_and_channels_together(as_torch):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2, 5, 5)).astype(np.float32)
    x[:, 1] = 2 * x[:, 0]  # channels must turn together
    data = torch.from_numpy(x.copy()) if as_torch else x.copy()
    out = augment(data, np.random.default_rng(1))
    out = out.numpy() if as_torch else out
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_array_equal(data if not as_torch else data.numpy(), x)  # input untouched
    for i in range(64):
        np.testing.assert_array_equal(np.sort(out[i].ravel()), np.sort(x[i].ravel()))
        assert out[i, 0, 2, 2] == x[i, 0, 2, 2]  # the centre (and so the label) stays
    np.testing.assert_array_equal(out[:, 1], 2 * out[:, 0])
    changed = sum(not np.array_equal(out[i], x[i]) for i in range(64))
    assert changed > 40  # 7 of 8 transforms move a generic cutout


def test_augment_with_given_codes_matches_dihedral():
    x = np.arange(2 * 1 * 3 * 3, dtype=np.float32).reshape(2, 1, 3, 3)
    out = augment(x, np.random.default_rng(0), codes=np.array([3, 6]))
    np.testing.assert_array_equal(out[0], dihedral(x[0], 3))
    np.testing.assert_array_equal(out[1], dihedral(x[1], 6))
    with pytest.raises(ValueError, match="codes: must have shape"):
        augment(x, np.random.default_rng(0), codes=np.array([1]))


def test_fade_scales_the_source_and_restores_the_noise_level():
    """Faded cutouts: the source is a times fainter, the noise (raw and filtered) keeps its level."""
    from scipy.ndimage import gaussian_filter

    from neocascade.data.transforms import fade

    rng = np.random.default_rng(0)
    n, size, sigma, level = 4000, 21, 1.0, 6.0
    raw = rng.normal(0.0, level, (n, 29, 29)).astype(np.float32)
    raw[:, 14, 14] += 400.0  # a bright point source at the centre
    filtered = gaussian_filter(raw, sigma=(0, sigma, sigma))[:, 4:25, 4:25]
    cut = np.stack([filtered, raw[:, 4:25, 4:25]], axis=1)
    out = fade(cut, noise=np.full(n, level), sigma=sigma, rng=np.random.default_rng(1), probability=1.0,
               min_scale=0.25, min_snr=0.0)
    assert out.shape == cut.shape and out.dtype == np.float32 and not np.shares_memory(out, cut)
    centre = out[:, 1, 10, 10] / cut[:, 1, 10, 10]
    assert 0.2 < centre.min() and centre.max() <= 1.05 and np.median(centre) < 0.7  # fainter, log-uniform a
    corner = (slice(None), slice(0, 5), slice(0, 5))  # far from the source: noise only
    for ch in (0, 1):
        before, after = cut[:, ch][corner].std(), out[:, ch][corner].std()
        assert after == pytest.approx(before, rel=0.05), ch
    # nothing fades below min_snr, and probability 0 or an all-dead cutout changes nothing
    safe = fade(cut, noise=np.full(n, level), sigma=sigma, rng=np.random.default_rng(2), probability=1.0,
                min_scale=0.01, min_snr=20.0)
    from neocascade.preprocess.filters import gaussian_kernel1d

    k = gaussian_kernel1d(sigma)
    filtered_noise = level * np.sqrt(np.sum(np.outer(k, k) ** 2))
    assert (safe[:, 0, 10, 10] / filtered_noise).min() > 20.0 - 4.0  # the scaled source >= 20, plus fresh noise
    np.testing.assert_array_equal(fade(cut, noise=np.full(n, level), sigma=sigma, rng=rng, probability=0.0), cut)
    dead = np.zeros((2, 2, size, size), np.float32)
    np.testing.assert_array_equal(fade(dead, noise=np.full(2, level), sigma=sigma, rng=rng, probability=1.0), dead)
    with pytest.raises(ValueError, match="fade: need"):
        fade(cut[:2], noise=np.full(2, level), sigma=sigma, rng=rng, min_scale=0.0)


def test_fade_with_matched_correlation_keeps_the_noise_texture():
    """Correlated noise stays correlated after fading: the adjacent correlation and the filtered / raw noise ratio
    of the result are the original's; white fresh noise (the default) would lower both."""
    from scipy.ndimage import gaussian_filter

    from neocascade.data.transforms import adjacent_correlation, fade
    from neocascade.simulation.noise import correlated_noise

    rng = np.random.default_rng(3)
    n, sigma, level, rho = 1500, 1.0, 6.0, 0.4
    raw = correlated_noise((n * 29, 29), rng=rng, correlation=rho, rms=level).reshape(n, 29, 29)
    filtered = gaussian_filter(raw, sigma=(0, sigma, sigma))[:, 4:25, 4:25]
    cut = np.stack([filtered, raw[:, 4:25, 4:25]], axis=1)
    cut[:, :, 10, 10] += np.array([100.0, 400.0], dtype=np.float32)  # a source, so every cutout fades
    np.testing.assert_allclose(adjacent_correlation(cut[:, 1], np.full(n, level)).mean(), rho, atol=0.02)
    kw = dict(noise=np.full(n, level), sigma=sigma, probability=1.0, min_scale=0.1, min_snr=0.0)
    matched = fade(cut, rng=np.random.default_rng(4), match_correlation=True, **kw)
    white = fade(cut, rng=np.random.default_rng(4), **kw)
    corner = (slice(None), slice(0, 6), slice(0, 6))
    ratio = {name: out[:, 0][corner].std() / out[:, 1][corner].std()
             for name, out in (("cached", cut), ("matched", matched), ("white", white))}
    assert ratio["matched"] == pytest.approx(ratio["cached"], rel=0.05)
    assert ratio["white"] < 0.85 * ratio["cached"]
    assert adjacent_correlation(matched[:, 1], np.full(n, level)).mean() == pytest.approx(rho, abs=0.03)
    assert adjacent_correlation(white[:, 1], np.full(n, level)).mean() < rho - 0.15
    assert matched[:, 1][corner].std() == pytest.approx(level, rel=0.05)


def test_adjacent_correlation_ignores_the_centre_sources_and_dead_pixels():
    from neocascade.data.transforms import adjacent_correlation

    rng = np.random.default_rng(5)
    raw = rng.normal(0.0, 5.0, (400, 21, 21))
    raw[:, 8:13, 8:13] = 1000.0  # a bright source at the centre
    raw[:, 0, :] = 0.0  # a dead row
    raw[:, 18, 2:6] = 300.0  # a cosmic ray off centre
    rho = adjacent_correlation(raw, np.full(400, 5.0))
    assert abs(rho.mean()) < 0.02 and rho.min() >= 0.0 and rho.max() <= 0.65
    assert np.array_equal(adjacent_correlation(np.zeros((2, 21, 21)), np.ones(2)), np.zeros(2))



@pytest.mark.parametrize("normalize", ["image_noise", "local_noise", "snr", "cutout", "none"])
def test_no_cutouts_give_an_empty_batch(normalize):
    empty = np.zeros((0, 2, 5, 5), np.float32)
    x = assemble_inputs(empty, channels=["filtered", "raw"], normalize=normalize, image_noise=np.zeros(0),
                        local_noise=np.zeros(0))
    assert x.shape == (0, 2, 5, 5) and x.dtype == np.float32
