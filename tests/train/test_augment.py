"""Augmentation against independent numpy computations and coordinate-coded images."""

import numpy as np
import pytest
import torch
from PIL import Image

from netspec.spec.settings import DataConfig
from netspec.train.augment import (
    IMAGENET_PCA,
    EvalTransform,
    Stats,
    TrainTransform,
    fit_pca,
    fit_stats,
    mean_image,
    pca_noise,
    rescale_and_center,
    sample_generator,
    ten_crop,
)


def coords(h: int, w: int, channels: int = 3) -> torch.Tensor:
    """Float image whose value at (c, y, x) is 1000·y + x + 100000·c: position readable."""
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    plane = (1000 * y + x).to(torch.float64)
    return torch.stack([plane + 100000 * c for c in range(channels)])


def correlated_pixels(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = np.array([[0.5, 0.3, 0.1], [0.2, 0.4, 0.1], [0.1, 0.2, 0.3]])
    return np.clip(0.4 + rng.normal(size=(n, 3)) @ mix * 0.3, 0, 1)


def test_pca_noise_equals_numpy_with_the_same_alphas():
    rng = np.random.default_rng(1)
    img = rng.uniform(0, 1, (3, 5, 7))
    eigvals, eigvecs = fit_pca(torch.from_numpy(correlated_pixels(500)))
    out = pca_noise(
        torch.from_numpy(img).float(), eigvecs, eigvals, 0.1, torch.Generator().manual_seed(7)
    )
    alpha = (torch.randn(3, generator=torch.Generator().manual_seed(7)) * 0.1).double().numpy()
    shift = eigvecs.double().numpy() @ (alpha * eigvals.double().numpy())
    np.testing.assert_allclose(out.numpy(), img + shift[:, None, None], atol=1e-6)
    assert np.abs(shift).max() > 1e-4  # the noise is really there


def test_pca_alpha_is_normal_with_the_given_std_and_fresh_per_call():
    g = torch.Generator().manual_seed(0)
    zero, eye, ones = torch.zeros(3, 1, 1), torch.eye(3), torch.ones(3)
    alphas = torch.stack([pca_noise(zero, eye, ones, 0.1, g)[:, 0, 0] for _ in range(20000)])
    a = alphas.double().numpy().ravel()
    assert a.std() == pytest.approx(0.1, rel=0.02)
    kurtosis = ((a - a.mean()) ** 4).mean() / a.var() ** 2
    assert kurtosis == pytest.approx(3.0, abs=0.15)  # a uniform draw would give 1.8
    assert np.abs(a).max() > 0.1 * 3**0.5  # beyond the range of a uniform with std 0.1
    assert not torch.equal(alphas[0], alphas[1])


def test_fit_pca_matches_numpy_eigh():
    x = correlated_pixels(2000)
    eigvals, eigvecs = fit_pca(torch.from_numpy(x))
    cov = np.cov(x.T, bias=True)
    want_vals, want_vecs = np.linalg.eigh(cov)
    np.testing.assert_allclose(eigvals.numpy(), want_vals[::-1], rtol=1e-5)
    for i in range(3):
        p = eigvecs[:, i].double().numpy()  # columns are the eigenvectors
        np.testing.assert_allclose(cov @ p, eigvals[i].item() * p, atol=1e-6)
        assert abs(p @ want_vecs[:, 2 - i]) == pytest.approx(1, abs=1e-5)


def test_fit_stats_mean_image_and_pca_match_numpy():
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, (6, 3, 4, 4), dtype=np.uint8)
    imgs[:, 1] = imgs[:, 0] // 2 + 60  # correlate green with red
    stats = fit_stats(torch.from_numpy(i) for i in imgs)
    x = imgs.astype(np.float64) / 255
    np.testing.assert_allclose(stats.mean.numpy(), x.mean(0), atol=1e-6)
    cov = np.cov(x.transpose(1, 0, 2, 3).reshape(3, -1), bias=True)
    np.testing.assert_allclose(stats.eigvals.numpy(), np.linalg.eigvalsh(cov)[::-1], rtol=1e-5)
    for i in range(3):
        p = stats.eigvecs[:, i].double().numpy()
        np.testing.assert_allclose(cov @ p, stats.eigvals[i].item() * p, atol=1e-6)


def test_imagenet_pca_columns_are_the_eigenvectors():
    eigvals, eigvecs = (t.double() for t in IMAGENET_PCA)
    assert eigvals.tolist() == pytest.approx([0.2175, 0.0188, 0.0045])
    assert eigvecs[0].tolist() == pytest.approx([-0.5675, 0.7192, 0.4009])  # docs/paper.md's row 1
    torch.testing.assert_close(
        eigvecs.T @ eigvecs, torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-4
    )
    brightness = torch.ones(3, dtype=torch.float64) / 3**0.5
    assert abs(eigvecs[:, 0] @ brightness) > 0.999  # p1, the largest, is brightness
    cov = eigvecs @ torch.diag(eigvals) @ eigvecs.T
    corr = cov / torch.outer(cov.diag().sqrt(), cov.diag().sqrt())
    assert corr.min() > 0.75  # natural images: R, G, B strongly positively correlated
    wrong = eigvecs.T @ torch.diag(eigvals) @ eigvecs  # rows taken as eigenvectors
    assert wrong[0, 1] < 0


def cfg(**kw) -> DataConfig:
    return DataConfig(**{"resize": 8, "crop": 6, "mean": "none", "pca": "none", **kw})


def test_random_crop_and_mirror_geometry():
    img = coords(8, 8) * 255  # TrainTransform divides by 255
    t, g = TrainTransform(cfg(), None), torch.Generator().manual_seed(3)
    seen = set()
    for _ in range(200):
        out, w = t.apply(img, g)
        want = coords(8, 8)[:, w.top : w.top + 6, w.left : w.left + 6]
        want = want.flip(-1) if w.flip else want
        torch.testing.assert_close(out.double(), want, rtol=1e-6, atol=0.1)
        corner = 1000 * w.top + (w.left + 5 if w.flip else w.left)
        assert out[0, 0, 0].item() == pytest.approx(corner, abs=0.1)
        seen.add((w.top, w.left, w.flip))
    assert seen == {(t, x, f) for t in range(3) for x in range(3) for f in (False, True)}
    no_mirror = TrainTransform(cfg(mirror=False), None)
    assert not any(no_mirror.apply(img, g)[1].flip for _ in range(50))


def test_crop_subtracts_the_matching_window_of_the_mean_image():
    mean = coords(8, 8).float() / 1e6
    stats = Stats(mean, torch.ones(3), torch.eye(3))
    t, g = TrainTransform(cfg(mean="pixel"), stats), torch.Generator().manual_seed(0)
    for _ in range(20):
        out, w = t.apply(torch.zeros(3, 8, 8, dtype=torch.uint8), g)
        want = -mean[:, w.top : w.top + 6, w.left : w.left + 6]
        torch.testing.assert_close(out, want.flip(-1) if w.flip else want)


def test_mean_modes_against_numpy():
    rng = np.random.default_rng(4)
    mean = rng.uniform(0, 1, (3, 8, 8)).astype(np.float32)
    img = rng.integers(0, 256, (3, 8, 8), dtype=np.uint8)
    stats = Stats(torch.from_numpy(mean), torch.ones(3), torch.eye(3))
    x = img / 255.0
    per_channel = mean.mean((1, 2), keepdims=True)
    for mode, sub in [("pixel", mean), ("channel", per_channel), ("none", 0.0)]:
        out = EvalTransform(cfg(mean=mode), stats)(torch.from_numpy(img))
        np.testing.assert_allclose(out.numpy(), (x - sub)[:, 1:7, 1:7], atol=1e-6)
    np.testing.assert_allclose(
        mean_image(cfg(mean="channel"), stats).numpy(), np.broadcast_to(per_channel, mean.shape)
    )


def test_ten_crop_regions_and_order():
    img = coords(10, 12, channels=1)
    crops = ten_crop(img, 4)
    assert crops.shape == (10, 1, 4, 4)
    # top-left corner of TL, TR, BL, BR, centre: (0,0) (0,8) (6,0) (6,8) (3,4)
    assert crops[:5, 0, 0, 0].tolist() == [0, 8, 6000, 6008, 3004]
    assert crops[:5, 0, 3, 3].tolist() == [3003, 3011, 9003, 9011, 6007]
    torch.testing.assert_close(crops[5:], crops[:5].flip(-1))
    assert crops[5:, 0, 0, 0].tolist() == [3, 11, 6003, 6011, 3007]  # mirrored: right column


def test_eval_ten_crop_is_normalised_like_training():
    img = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    stats = Stats(torch.rand(3, 8, 8), torch.ones(3), torch.eye(3))
    out = EvalTransform(cfg(mean="pixel", ten_crop=True), stats)(img)
    assert out.shape == (10, 3, 6, 6)
    torch.testing.assert_close(out, ten_crop(img / 255 - stats.mean, 6))
    centre = EvalTransform(cfg(mean="pixel"), stats)(img)
    torch.testing.assert_close(out[4], centre)


def test_an_images_generator_is_the_epoch_sequences_child():
    def child_draws(seed: int, epoch: int, index: int) -> torch.Tensor:
        child = np.random.SeedSequence([seed, epoch]).spawn(index + 1)[index]
        g = torch.Generator().manual_seed(int(child.generate_state(1, np.uint64)[0]))
        return torch.rand(4, generator=g)

    for key in [(0, 0, 0), (0, 0, 7), (3, 1, 5), (3, 2, 5), (4, 1, 5)]:
        torch.testing.assert_close(
            torch.rand(4, generator=sample_generator(*key)), child_draws(*key)
        )

    def draws(key: tuple[int, int, int]) -> tuple[float, ...]:
        return tuple(torch.rand(2, generator=sample_generator(*key)).tolist())

    keys = [(0, epoch, index) for epoch in range(3) for index in range(50)]
    assert len({draws(k) for k in keys}) == len(keys)  # every (epoch, image) its own draws
    assert draws((0, 2, 49)) == draws((0, 2, 49))  # and the same ones again


def test_colour_noise_in_float_no_uint8_wraparound():
    white = torch.full((3, 8, 8), 255, dtype=torch.uint8)
    t, g = TrainTransform(cfg(pca="imagenet", pca_std=1.0), None), torch.Generator().manual_seed(5)
    outs = torch.stack([t(white, g) for _ in range(50)])
    per_image = outs.flatten(2)
    assert torch.equal(per_image.amin(2), per_image.amax(2))  # one shift per image and channel
    assert outs.max() > 1.0 and outs.min() < 1.0  # pushed past white, not wrapped to black
    assert (outs - 1).abs().max() < 1.0


def test_rescale_shorter_side_then_centre_square():
    x = np.tile(np.arange(60, dtype=np.uint8), (30, 1))  # red = column index
    wide = Image.fromarray(np.stack([x, x, x], -1))  # 60 wide, 30 high
    out = np.asarray(rescale_and_center(wide, 30))
    assert out.shape == (30, 30, 3)
    assert out[0, :, 0].tolist() == list(range(15, 45))
    tall = Image.new("L", (50, 100))  # grey, portrait: converted to RGB, 25×50 → 25×25
    assert rescale_and_center(tall, 25).size == (25, 25)
    assert rescale_and_center(tall, 25).mode == "RGB"


def test_crop_larger_than_resize_is_refused():
    with pytest.raises(ValueError, match=r"data\.crop \(9\) must not exceed data\.resize \(8\)"):
        TrainTransform(cfg(crop=9), None)
