"""A real dataset nobody here wrote: scikit-learn's bundled digits, as PNG files in label folders."""
from __future__ import annotations

import numpy as np
from PIL import Image

from otpipe import store


def test_sklearn_digits_png_folders(tmp_path, cli):
    from sklearn.datasets import load_digits

    digits = load_digits()  # 1,797 8x8 images, values 0..16, bundled with scikit-learn
    images, target = digits.images.astype(np.uint8), digits.target
    assert images.shape == (1797, 8, 8)
    root = tmp_path / "digits"
    for lab in range(10):
        (root / str(lab)).mkdir(parents=True)
    for i, (img, lab) in enumerate(zip(images, target)):
        Image.fromarray(img, mode="L").save(root / str(lab) / f"digit_{i:04d}.png")

    r = cli("ingest", root, "--out", tmp_path / "digits.zarr", "--labels", "parent", "--format", "png")
    assert r.code == 0, r.err
    c = store.open(tmp_path / "digits.zarr")
    assert len(c) == 1797 and c.dim == 2 and c.verify()
    idx = np.array([int(n.split("_")[1]) for n in c.names])
    assert sorted(idx.tolist()) == list(range(1797))
    # right labels
    np.testing.assert_array_equal(c.labels.astype(int), target[idx])
    assert c.info()["labels"] == {str(k): int((target == k).sum()) for k in range(10)}
    # right total mass, measure by measure and overall
    masses = np.array([m.weights.sum(dtype=np.float64) for m in c])
    np.testing.assert_array_equal(masses, images[idx].reshape(len(idx), -1).sum(axis=1))
    assert masses.sum() == digits.images.sum()
    # and the pixels are where they should be: one digit in full
    m = c[c.names[0]]
    img = images[idx[0]]
    rows, cols = np.nonzero(img)
    np.testing.assert_array_equal(m.points, np.stack([cols + 0.5, 8 - rows - 0.5], axis=1).astype(np.float32))
    np.testing.assert_array_equal(m.weights, img[rows, cols].astype(np.float32))
    # selection by label
    sevens = c.select(label="7")
    assert len(sevens) == int((target == 7).sum()) and set(sevens.labels) == {"7"}
