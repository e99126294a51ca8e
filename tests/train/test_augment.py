"""Augmentation against independent numpy computations and position-coded images.

Each test runs the real path: a split of uint8 squares, the loader's `Crops` (uint8 windows
and draws), then `Finish` (float, mean, colour noise, mirror, scale) on the CPU.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from netspec.spec.settings import DataConfig
from netspec.train.augment import (
    IMAGENET_PCA,
    Batch,
    EvalWindows,
    Finish,
    Stats,
    TrainWindows,
    fit_pca,
    fit_stats,
    mean_image,
    needs_stats,
)
from netspec.train.data import Crops
from netspec.train.decode import rescale_and_center
from netspec.train.draws import draw
from netspec.train.split import Split


class Squares(Split):
    """A split held in memory: the same image under every index unless given several."""

    def __init__(self, images: np.ndarray, count: int = 1) -> None:
        self.images = images if images.ndim == 4 else images[None]
        self.targets = [0] * max(count, len(self.images))
        self.classes, self.resize, self.where = ["a"], self.images.shape[-1], Path("mem")

    def image(self, index: int) -> np.ndarray:
        return self.images[index % len(self.images)]

    def fit_stats(self, limit: int, cache_dir: Path) -> Stats:
        raise NotImplementedError


def coords(h: int, w: int) -> np.ndarray:
    """uint8 3×h×w whose value at (c, y, x) is 16·y + x + 2·c: its position, readable."""
    y, x = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([16 * y + x + 2 * c for c in range(3)]).astype(np.uint8)


def correlated_pixels(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = np.array([[0.5, 0.3, 0.1], [0.2, 0.4, 0.1], [0.1, 0.2, 0.3]])
    return np.clip(0.4 + rng.normal(size=(n, 3)) @ mix * 0.3, 0, 1)


def cfg(**kw) -> DataConfig:
    return DataConfig(
        **{"resize": 8, "crop": 6, "mean": "none", "pca": "none", "pixel_scale": 1, **kw}
    )


def train_batch(c: DataConfig, images: np.ndarray, n: int, seed=0, epoch=0) -> Batch:
    return Crops(Squares(images, n), TrainWindows(c, seed, epoch), c.crop).__getitems__(range(n))


def finished(c: DataConfig, stats: Stats | None, batch: Batch) -> np.ndarray:
    return Finish(c, stats, torch.device("cpu"))(batch).double().numpy()


# --- training windows ------------------------------------------------------------------------


def test_random_crop_and_mirror_geometry():
    img = coords(8, 8)
    c = cfg(pixel_scale=255)
    batch = train_batch(c, img, 300)
    out, w = finished(c, None, batch), batch.windows
    seen = set()
    for j in range(300):
        t, left, flip = int(w.top[j]), int(w.left[j]), bool(w.flip[j])
        want = img[:, t : t + 6, left : left + 6].astype(np.float64)
        np.testing.assert_allclose(out[j], want[..., ::-1] if flip else want, atol=1e-4)
        assert np.array_equal(batch.crops[j].numpy(), img[:, t : t + 6, left : left + 6])
        seen.add((t, left, flip))
    assert seen == {(t, x, f) for t in range(3) for x in range(3) for f in (False, True)}
    assert not train_batch(cfg(mirror=False), img, 50).windows.flip.any()


def test_crop_subtracts_the_matching_window_of_the_mean_image():
    mean = torch.from_numpy(coords(8, 8)).float() / 1e4
    stats = Stats(mean, torch.ones(3), torch.eye(3))
    c = cfg(mean="pixel")
    batch = train_batch(c, np.zeros((3, 8, 8), np.uint8), 40)
    out = finished(c, stats, batch)
    for j, (t, left, flip) in enumerate(zip(*batch.windows[:3], strict=True)):
        want = -mean[:, t : t + 6, left : left + 6].double().numpy()
        np.testing.assert_allclose(out[j], want[..., ::-1] if flip else want, atol=1e-7)


def test_pca_noise_equals_numpy_with_the_same_alphas():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (3, 8, 8), dtype=np.uint8)
    eigvals, eigvecs = fit_pca(torch.from_numpy(correlated_pixels(500)))
    stats = Stats(torch.zeros(3, 8, 8), eigvals, eigvecs)
    c = cfg(pca="dataset", mirror=False, crop=8)
    batch = train_batch(c, img, 5)
    out = finished(c, stats, batch)
    for j in range(5):
        alpha = batch.windows.alpha[j].double().numpy() * 0.1
        shift = eigvecs.double().numpy() @ (alpha * eigvals.double().numpy())
        np.testing.assert_allclose(out[j], img / 255 + shift[:, None, None], atol=1e-6)
        assert np.abs(shift).max() > 1e-4  # the noise is really there


def test_draws_are_uniform_fair_and_normal():
    d = draw(seed=0, epoch=0, indices=np.arange(40000), room=4, mirror=True)
    assert np.bincount(d.top, minlength=5).tolist() == pytest.approx([8000] * 5, rel=0.05)
    assert np.bincount(d.left, minlength=5).tolist() == pytest.approx([8000] * 5, rel=0.05)
    assert d.flip.mean() == pytest.approx(0.5, abs=0.01)
    a = d.alpha.astype(np.float64)
    assert a.mean(0).tolist() == pytest.approx([0, 0, 0], abs=0.02)
    assert a.std(0).tolist() == pytest.approx([1, 1, 1], rel=0.02)
    kurtosis = ((a - a.mean(0)) ** 4).mean(0) / a.var(0) ** 2
    assert kurtosis.tolist() == pytest.approx([3, 3, 3], abs=0.15)  # a uniform would give 1.8
    assert abs(np.corrcoef(a.T)[0, 1]) < 0.02 and abs(np.corrcoef(d.top, d.left)[0, 1]) < 0.02


def test_an_images_draws_depend_on_its_key_alone():
    whole = draw(3, 1, np.arange(100), room=10, mirror=True)
    part = draw(3, 1, np.array([57, 3]), room=10, mirror=True)
    for field in range(4):
        assert np.array_equal(whole[field][[57, 3]], part[field])  # not on the batch around it
    keys = {
        (e, i): draw(0, e, np.array([i]), 1000, True).alpha.tobytes()
        for e in range(3)
        for i in range(50)
    }
    assert len(set(keys.values())) == 150  # every (epoch, image) its own draws
    same = draw(0, 0, np.arange(5), 1000, True)
    assert draw(0, 0, np.arange(5), 1000, True).alpha.tobytes() == same.alpha.tobytes()
    assert draw(1, 0, np.arange(5), 1000, True).alpha.tobytes() != same.alpha.tobytes()
    big = draw(2**70, 0, np.arange(3), 9, True)  # seeds are taken modulo 2**64
    assert big.top.tolist() == draw(2**70 % 2**64, 0, np.arange(3), 9, True).top.tolist()


def test_finishing_a_batch_equals_finishing_its_parts():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (6, 3, 8, 8), dtype=np.uint8)
    stats = Stats(torch.rand(3, 8, 8), *IMAGENET_PCA)
    c = cfg(mean="pixel", pca="imagenet", pixel_scale=255)
    crops = Crops(Squares(images), TrainWindows(c, 4, 2), c.crop)
    finish = Finish(c, stats, torch.device("cpu"))
    whole = finish(crops.__getitems__(range(6)))
    parts = [finish(crops.__getitems__(p)) for p in ([0, 1, 2, 3], [4], [5])]
    assert torch.equal(torch.cat(parts), whole)  # bit for bit, as replicas need


def test_colour_noise_in_float_no_uint8_wraparound():
    white = np.full((3, 8, 8), 255, dtype=np.uint8)
    c = cfg(pca="imagenet", pca_std=1.0)
    outs = finished(c, None, train_batch(c, white, 50))
    per_image = outs.reshape(50, 3, -1)
    assert np.array_equal(per_image.min(2), per_image.max(2))  # one shift per image and channel
    assert outs.max() > 1.0 and outs.min() < 1.0  # pushed past white, not wrapped to black
    assert np.abs(outs - 1).max() < 1.0


# --- evaluation windows ----------------------------------------------------------------------


def eval_batch(c: DataConfig, images: np.ndarray, n: int = 1) -> Batch:
    return Crops(Squares(images, n), EvalWindows(c), c.crop).__getitems__(range(n))


def test_mean_modes_against_numpy():
    rng = np.random.default_rng(4)
    mean = rng.uniform(0, 1, (3, 8, 8)).astype(np.float32)
    img = rng.integers(0, 256, (3, 8, 8), dtype=np.uint8)
    stats = Stats(torch.from_numpy(mean), torch.ones(3), torch.eye(3))
    x = img / 255.0
    per_channel = mean.mean((1, 2), keepdims=True)
    for mode, sub in [("pixel", mean), ("channel", per_channel), ("none", 0.0)]:
        c = cfg(mean=mode)
        out = finished(c, stats, eval_batch(c, img))[0]
        np.testing.assert_allclose(out, (x - sub)[:, 1:7, 1:7], atol=1e-6)
    np.testing.assert_allclose(
        mean_image(cfg(mean="channel"), stats).numpy(), np.broadcast_to(per_channel, mean.shape)
    )


def test_ten_crop_regions_and_order():
    img = coords(10, 10)
    c = cfg(resize=10, crop=4, ten_crop=True, pixel_scale=255)
    batch = eval_batch(c, img, 2)
    assert batch.crops.shape == (2, 10, 3, 4, 4)
    out = finished(c, None, batch).round().astype(int)
    assert out.shape == (20, 3, 4, 4)
    # top-left corner of TL, TR, BL, BR, centre: (0,0) (0,6) (6,0) (6,6) (3,3)
    assert out[:5, 0, 0, 0].tolist() == [0, 6, 96, 102, 51]
    assert out[:5, 0, 3, 3].tolist() == [51, 57, 147, 153, 102]
    assert np.array_equal(out[5:10], out[:5, ..., ::-1])  # the same five, mirrored
    assert out[5:10, 0, 0, 0].tolist() == [3, 9, 99, 105, 54]  # mirrored: right column
    assert np.array_equal(out[10:], out[:10])  # the second image's views follow the first's


def test_eval_ten_crop_is_normalised_like_the_centre_crop():
    img = np.random.default_rng(5).integers(0, 256, (3, 8, 8), dtype=np.uint8)
    stats = Stats(torch.rand(3, 8, 8), torch.ones(3), torch.eye(3))
    ten = finished(cfg(mean="pixel", ten_crop=True), stats, eval_batch(cfg(ten_crop=True), img))
    centre = finished(cfg(mean="pixel"), stats, eval_batch(cfg(), img))
    assert ten.shape == (10, 3, 6, 6)
    np.testing.assert_array_equal(ten[4], centre[0])
    np.testing.assert_allclose(
        ten[0], (img / 255 - stats.mean.double().numpy())[:, :6, :6], atol=1e-6
    )


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
        cfg(crop=9)


# --- torchvision's per-channel normalisation ---------------------------------------------


def test_mean_and_std_lists_normalise_as_torchvision_does():
    from torchvision.transforms import v2

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    c = cfg(mean=list(mean), std=list(std))
    assert not needs_stats(c)  # nothing fitted on the training set
    img = np.random.default_rng(6).integers(0, 256, (3, 8, 8), dtype=np.uint8)
    out = finished(c, None, eval_batch(c, img))[0]
    reference = v2.Compose([v2.CenterCrop(6), v2.ToDtype(torch.float32, scale=True)])
    want = v2.Normalize(mean, std)(reference(torch.from_numpy(img)))
    np.testing.assert_allclose(out, want.double().numpy(), atol=1e-6)


def test_colour_noise_is_added_before_the_division_by_std():
    img = np.full((3, 8, 8), 128, dtype=np.uint8)
    c = cfg(mean=[0.5, 0.5, 0.5], std=[0.5, 0.25, 0.125], pca="imagenet", mirror=False)
    batch = train_batch(c, img, 4)
    out = finished(c, None, batch)
    eigvals, eigvecs = (t.double().numpy() for t in IMAGENET_PCA)
    for j in range(4):
        shift = eigvecs @ (batch.windows.alpha[j].double().numpy() * 0.1 * eigvals)
        want = (128 / 255 - 0.5 + shift) / np.array([0.5, 0.25, 0.125])
        np.testing.assert_allclose(out[j, :, 0, 0], want, atol=1e-6)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"std": [0.2, 0.0, 0.2]}, "must be positive in every channel"),
        ({"mean": [0.5, 0.5]}, r"or three values \(red, green, blue in \[0, 1\]\), got 2 values"),
        ({"std": [0.2, 0.2, 0.2, 0.2]}, "at most 3 items"),
    ],
)
def test_bad_mean_and_std_lists_are_refused(values, message):
    with pytest.raises(ValueError, match=message):
        cfg(**values)
