"""Bounding boxes, their diagonal and the lattice of a point set (otpipe.geometry.boxes): the one copy that the
distance pipeline, the barycenters, the two-sample tests and the pictures of images share; the median
heuristic of the kernel bandwidths (otpipe.tools.losses.median_distance) shared by the losses and the tests."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from otpipe.geometry.boxes import bounds, box_diagonal, lattice, union


def test_bounds_union_diagonal():
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(n, 3)) for n in (5, 1, 7)]
    allp = np.concatenate(parts)
    box = union([bounds(p) for p in parts] + [None, (None, None)])
    np.testing.assert_array_equal(box[0], allp.min(0))
    np.testing.assert_array_equal(box[1], allp.max(0))
    assert box_diagonal(box, 0.5) == float(np.linalg.norm(allp.max(0) - allp.min(0)))
    assert bounds(np.zeros((0, 3))) is None and union([None, (None, None)]) is None
    assert box_diagonal(None, 0.5) == 0.5  # no point
    assert box_diagonal(bounds(np.ones((4, 2))), 0.5) == 0.5  # every point the same
    assert box_diagonal((np.zeros(2), np.array([np.inf, 0.0])), 2.0) == 2.0  # not finite


def test_pipeline_diameter_is_the_union_of_the_shard_boxes(tmp_path):
    """``bbox_task`` per shard, joined by ``diameter_from_boxes``: the diagonal of every positive-weight point."""
    from otpipe import store
    from otpipe.pipelines.tasks import bbox_task, diameter_from_boxes

    rng = np.random.default_rng(1)
    ms = [store.Measure(rng.normal(size=(10, 2)) * (k + 1), np.r_[0.0, rng.random(9) + 0.1], f"m{k}") for k in range(6)]
    ms[0].points[0] = 1e3  # zero weight: not in the box
    c = store.create(tmp_path / "c.zarr", ms, dtype="float64")
    boxes = [bbox_task(str(c.path), [0, 1, 2]), bbox_task(str(c.path), list(range(3, len(c))))]
    pts = np.concatenate([np.asarray(m.points, dtype=np.float64)[np.asarray(m.weights) > 0] for m in c])
    assert pts.max() < 1e3
    assert diameter_from_boxes(boxes, 0.05) == float(np.linalg.norm(pts.max(0) - pts.min(0)))
    assert diameter_from_boxes([(None, None)], 0.05) == 0.05


def test_lattice():
    img = np.stack(np.meshgrid(np.arange(6) * 0.25, np.arange(4) * 0.25, indexing="ij"), -1).reshape(-1, 2) + 1.0
    lo, h, shape = lattice(img[::3])  # some nodes missing: the box is the lattice
    np.testing.assert_array_equal(lo, [1.0, 1.0])
    assert h == 0.25 and shape == (6, 4)
    assert lattice(img, 0.125)[2] == (11, 7)  # a given step
    assert lattice(np.random.default_rng(0).normal(size=(30, 2))) is None  # a cloud
    assert lattice(np.ones((3, 2))) is None and lattice(np.ones((3, 2)), empty_spacing=1.0)[2] == (1, 1)
    assert lattice(img, max_cells=23) is None and lattice(img, max_cells=24) is not None
    assert lattice(img, max_side=5) is None and lattice(img, max_side=6) is not None
    # x on every other node of y's step: one lattice, at the smaller step
    assert lattice(np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]]))[1:] == (1.0, (3, 2))


def test_pictures_and_barycenters_find_the_same_lattice():
    from sklearn.datasets import load_digits

    from otpipe.store.plot import pixel_grid
    from otpipe.store.readers import image_to_measure
    from otpipe.tools.barycenters import detect_grid

    d = load_digits()
    ms = [image_to_measure(d.images[i], 16.0) for i in range(12)]
    g = pixel_grid([p for p, _ in ms])
    lo, h, shape = detect_grid(ms)
    assert (g.origin, g.spacing, (g.width, g.height)) == ((float(lo[0]), float(lo[1])), h, shape)
    assert pixel_grid([np.array([[3.5, 2.5]])]).spacing == 1.0 and detect_grid([(np.array([[3.5, 2.5]]), np.ones(1))]) is None


def test_median_distance():
    from otpipe.tools.losses import median_distance

    rng = np.random.default_rng(3)
    z = torch.from_numpy(rng.normal(size=(40, 2)))
    d = np.linalg.norm(z.numpy()[:, None] - z.numpy()[None], axis=-1)[np.triu_indices(40, 1)]
    assert median_distance(z, exact=True) == pytest.approx(float(torch.tensor(d).median()), rel=1e-12)
    assert median_distance(torch.ones(5, 2)) == 1.0 and median_distance(torch.ones(1, 2)) == 1.0
    big = torch.from_numpy(rng.normal(size=(3000, 2)))
    a = median_distance(big, max_points=500)
    b = median_distance(big, max_points=500, subsample="numpy")
    assert a != b and a == pytest.approx(b, rel=0.1)  # two uniform subsamples of one sample
    assert a == median_distance(big, max_points=500)  # deterministic
    with pytest.raises(ValueError, match="unknown subsample 'python'"):
        median_distance(big, subsample="python")
