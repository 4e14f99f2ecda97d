"""`otpipe report` on a collection store (e.g. barycenters) draws its measures."""
from __future__ import annotations

import numpy as np
from click.testing import CliRunner
from PIL import Image

from otpipe.cli import cli
from otpipe.store import Measure, create
from otpipe.store.plot import _as_image


def test_report_on_collections(tmp_path):
    r = CliRunner()
    res = r.invoke(cli, ["synth", "--out", str(tmp_path / "s.zarr"), "--kind", "circle,torus", "--dim", "3", "--n-measures", "4"])
    assert res.exit_code == 0, res.output
    res = r.invoke(cli, ["report", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "s.png")])
    assert res.exit_code == 0, res.output
    with Image.open(tmp_path / "s.png") as im:
        assert im.size[0] > 300 and im.size[1] > 200


def test_pixel_grid_measures_are_drawn_as_images(tmp_path):
    img = np.zeros((8, 8))
    img[2:6, 3] = 1.0
    ij = np.argwhere(img > 0)
    m = Measure((ij + 0.5).astype(np.float32), img[img > 0].astype(np.float32), "bar", "bar")
    back = _as_image(m.points.astype(float), m.weights.astype(float))
    assert back is not None and back.shape == (4, 1) and np.allclose(back[:, 0], 1.0)
    c = create(tmp_path / "img.zarr", [m])
    res = CliRunner().invoke(cli, ["report", str(c.path), "--out", str(tmp_path / "img.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "img.png").stat().st_size > 1000
