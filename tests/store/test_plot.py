"""Pictures of collections: images upright (as in their files) on one common pixel grid, greyscale,
a sample of every label; checked on a known asymmetric image (an 'L') and on scikit-learn's digits."""
from __future__ import annotations

import numpy as np
import pytest

from otpipe.store import Measure, create
from otpipe.store.plot import pixel_grid, sample_by_label, to_image
from otpipe.store.readers import image_to_measure

from ..images import L_IMAGE, assert_upright_l, dark_component, l_measure


def test_to_image_is_upright_on_the_common_grid():
    L = l_measure()
    dot = Measure(np.array([[9.5, 9.5]]), np.array([2.0]), "dot", "dot")  # top-right of a larger 10 x 10 picture
    g = pixel_grid([L.points, dot.points])
    assert (g.width, g.height, g.spacing) == (9, 9, 1.0) and g.origin == (1.5, 1.5)
    img = to_image(L.points, L.weights, g)
    assert img.shape == (9, 9) and img.sum() == pytest.approx(L_IMAGE.sum())
    # the L keeps its file orientation: rows 1..6 of the 8-row file are rows 3..8 of the 9-row grid
    np.testing.assert_array_equal(img[3:9, 0:4], L_IMAGE[1:7, 1:5])
    assert img[:3].sum() == 0 and img[:, 4:].sum() == 0
    d = to_image(dot.points, dot.weights, g)
    assert d[0, -1] == 2.0 and d.sum() == 2.0  # the dot at the top right
    assert pixel_grid([np.random.default_rng(0).normal(size=(20, 2))]) is None  # a cloud is not an image
    assert pixel_grid([np.zeros((3, 3))]) is None  # nor 3-D points


def test_sample_by_label_shows_every_label():
    labels = np.repeat([str(k) for k in range(10)], 30)  # 300 measures sorted by label, as ingested from folders
    idx = sample_by_label(300, labels, 30)
    assert len(idx) == 30
    assert {lab: int(np.sum(labels[idx] == lab)) for lab in set(labels)} == {str(k): 3 for k in range(10)}
    assert sample_by_label(300, None, 30) == sorted(set(sample_by_label(300, None, 30))) and len(sample_by_label(300, None, 30)) == 30
    assert sample_by_label(5, labels[:5], 30) == [0, 1, 2, 3, 4]
    many = np.array([f"g{k:03d}" for k in range(100)])
    assert len(sample_by_label(100, many, 30)) == 30  # more labels than panels: one of each of the first 30


def test_collection_report_draws_the_l_upright(tmp_path):
    from otpipe.report import write_report

    dot = Measure(np.array([[12.5, 12.5]]), np.array([1.0]), "dot", "dot")
    c = create(tmp_path / "img.zarr", [l_measure(), dot])
    files = write_report(c.path, tmp_path / "rep")
    page = files.html.read_text()
    assert files.html.name == "index.html" and [p.name for p in files.pngs] == ["measures.png"]
    assert "src='measures.png'" in page and "2 measures" in page and "common 12 x 12 pixel grid" in page
    assert_upright_l(dark_component(files.pngs[0]))


def test_sklearn_digit_ones_stand_upright():
    """A '1' is tall and thin: on the rendered images of scikit-learn's 1s, the ink spreads more along the
    rows (vertically) than along the columns (a transposed rendering lies on its side)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    ones = [image_to_measure(d.images[i], 16.0) for i in np.flatnonzero(d.target == 1)[:40]]
    g = pixel_grid([p for p, _ in ones])
    c0 = int(g.origin[0] - 0.5)  # pixel (row, col) of an 8-row image sits at (col + 1/2, 8 - row - 1/2)
    r0 = int(8 - 0.5 - (g.origin[1] + g.height - 1))
    ratios = []
    for i, (pts, w) in zip(np.flatnonzero(d.target == 1), ones):
        img = to_image(pts, w, g)
        np.testing.assert_array_equal(img, d.images[i][r0: r0 + g.height, c0: c0 + g.width])  # the file's pixels
        r, c = np.indices(img.shape)
        m = img / img.sum()
        var_r = (m * (r - (m * r).sum()) ** 2).sum()
        var_c = (m * (c - (m * c).sum()) ** 2).sum()
        ratios.append(var_r / var_c)
    assert np.median(ratios) > 2.0, np.median(ratios)
