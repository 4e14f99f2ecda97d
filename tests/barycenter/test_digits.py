"""Real case: class barycenters of scikit-learn's digits, ingested from PNG files by the CLI.

The images are written as PNGs in label folders, ingested with ``otpipe ingest --labels parent``
and averaged per class with ``otpipe barycenter --group-by label`` (fixed support on the pixel
grid, debiased, 2-worker LocalCluster). Each class barycenter must be closer, in the Sinkhorn
divergence at a common blur of one pixel, to its own class's pixel-mean image than to any other
class's mean image; the picture must be a readable PNG.
"""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import otpipe
from otpipe import store
from otpipe.cli import cli

CLASSES = (0, 1, 3, 4, 7)
PER_CLASS = 8


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    Image = pytest.importorskip("PIL.Image")
    datasets = pytest.importorskip("sklearn.datasets")
    tmp = tmp_path_factory.mktemp("digits")
    d = datasets.load_digits()
    for c in CLASSES:
        (tmp / "png" / str(c)).mkdir(parents=True)
        for j in np.flatnonzero(d.target == c)[:PER_CLASS]:
            Image.fromarray(np.round(d.images[j] * 255 / 16).astype(np.uint8)).save(tmp / "png" / str(c) / f"d{j}.png")
    runner = CliRunner()
    r = runner.invoke(cli, ["ingest", str(tmp / "png"), "--out", str(tmp / "store.zarr"), "--labels", "parent"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["barycenter", str(tmp / "store.zarr"), "--out", str(tmp / "bary.zarr"), "--group-by", "label",
                            "--method", "fixed", "--max-iter", "300", "--n-workers", "2"])
    assert r.exit_code == 0, r.output
    return tmp


def _class_mean_images(coll) -> dict[str, np.ndarray]:
    """Pixel-wise mean of the unit-mass images of each class, as (64,) weights on the 8x8 lattice."""
    sums, counts = {}, {}
    for i in range(len(coll)):
        m = coll[i]
        idx = np.round(np.asarray(m.points) - 0.5).astype(int)  # ingested pixel centres are at k + 0.5
        H = np.zeros((8, 8))
        np.add.at(H, (idx[:, 0], idx[:, 1]), np.asarray(m.weights, dtype=np.float64))
        sums[m.label] = sums.get(m.label, 0) + H / H.sum()
        counts[m.label] = counts.get(m.label, 0) + 1
    return {lab: (sums[lab] / counts[lab]).reshape(-1) for lab in sums}


def test_one_unit_mass_barycenter_per_class_on_the_pixel_grid(digits_run):
    out = store.open(digits_run / "bary.zarr")
    assert sorted(out.names, key=int) == [str(c) for c in CLASSES]
    for c in CLASSES:
        m = out[str(c)]
        assert m.label == str(c) and m.points.shape[1] == 2
        assert m.weights.sum() == pytest.approx(1.0, abs=1e-9) and (m.weights >= 0).all()
        k = np.asarray(m.points) - 0.5  # the 8x8 pixel lattice of the ingested images
        np.testing.assert_allclose(k, np.round(k), atol=1e-9)
        assert k.min() >= 0 and k.max() <= 7 and len(np.unique(np.round(k), axis=0)) == len(k) <= 64


def test_class_barycenter_is_closest_to_its_own_class_mean(digits_run):
    torch = pytest.importorskip("torch")
    coll = store.open(digits_run / "store.zarr")
    means = _class_mean_images(coll)
    grid = np.indices((8, 8)).reshape(2, -1).T + 0.5
    out = store.open(digits_run / "bary.zarr")
    t = lambda v: torch.as_tensor(np.asarray(v, dtype=np.float64))  # noqa: E731
    for c in CLASSES:
        b = out[str(c)]
        s = {lab: float(otpipe.sinkhorn_divergence(t(b.points), t(grid), t(b.weights), t(w), blur=1.0, diameter=8 * 2**0.5))
             for lab, w in means.items()}
        own = s[str(c)]
        others = min(v for lab, v in s.items() if lab != str(c))
        assert own < others, (c, s)


def test_picture_is_a_valid_png(digits_run):
    Image = pytest.importorskip("PIL.Image")
    png = digits_run / "bary.png"
    with Image.open(png) as im:
        im.verify()
    with Image.open(png) as im:
        assert im.format == "PNG"
        w, h = im.size
        assert 300 <= w <= 3000 and 200 <= h <= 2000
