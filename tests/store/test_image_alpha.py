"""Images with transparency: weight = intensity x alpha/255; fully transparent images refused (issue 21, item 8).

Real PNGs written with Pillow, read through ``read_file`` and ``otpipe ingest``.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from otpipe import store
from otpipe.store.readers import ReaderOptions, read_file

from .conftest import run_otpipe


def _rgba(path, grey: np.ndarray, alpha: np.ndarray):
    a = np.dstack([grey, grey, grey, alpha]).astype(np.uint8)
    Image.fromarray(a, mode="RGBA").save(path)
    return path


def _as_image(pts: np.ndarray, w: np.ndarray, shape) -> np.ndarray:
    """Weights back on the pixel grid (x = col + 1/2, y = H - row - 1/2)."""
    h = shape[0]
    out = np.zeros(shape)
    out[(h - pts[:, 1] - 0.5).astype(int), (pts[:, 0] - 0.5).astype(int)] = w
    return out


def test_fully_transparent_image_is_refused(tmp_path, cli):
    f = _rgba(tmp_path / "clear.png", np.full((8, 8), 255), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="clear.png: fully transparent image"):
        read_file(f)
    r = cli("ingest", f, "--out", tmp_path / "c.zarr")
    assert r.code == 1 and len(r.err_lines) == 1 and str(f) in r.err and "fully transparent" in r.err, r.err
    assert not (tmp_path / "c.zarr").exists()


def test_alpha_weighs_the_intensity(tmp_path, cli):
    rng = np.random.default_rng(0)
    grey = rng.integers(1, 256, size=(6, 7))
    alpha = rng.integers(0, 256, size=(6, 7))
    alpha[0, :] = 0  # a transparent row: no mass, whatever its colour
    alpha[1, :] = 255
    f = _rgba(tmp_path / "a.png", grey, alpha)
    notes: list[str] = []
    pts, w = read_file(f, notes=notes)
    got = _as_image(pts, w, grey.shape)
    np.testing.assert_allclose(got, grey * alpha / 255.0, rtol=1e-12)
    assert (got[0] == 0).all() and (got[1] == grey[1]).all()
    assert len(pts) == int((alpha > 0).sum())
    assert notes and "alpha channel used: weight = intensity x alpha/255" in notes[0]
    # invert acts on the intensity; transparent pixels still carry nothing
    pts, w = read_file(f, options=ReaderOptions(invert=True))
    got = _as_image(pts, w, grey.shape)
    np.testing.assert_allclose(got, (255 - grey) * alpha / 255.0, rtol=1e-12)
    # through the CLI: the same weights stored, and the summary says alpha was used
    r = run_otpipe("ingest", f, "--out", tmp_path / "a.zarr", "--dtype", "float64")
    assert r.code == 0, r.err
    assert "a.png: alpha channel used" in r.out
    m = store.open(tmp_path / "a.zarr")[0]
    np.testing.assert_allclose(_as_image(m.points, m.weights, grey.shape), grey * alpha / 255.0, rtol=1e-12)


def test_opaque_rgba_reads_like_rgb_and_la_palette_transparency(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(5, 5, 3)).astype(np.uint8)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([rgb, np.full((5, 5), 255, np.uint8)]), mode="RGBA").save(tmp_path / "opaque.png")
    notes: list[str] = []
    p1, w1 = read_file(tmp_path / "rgb.png")
    p2, w2 = read_file(tmp_path / "opaque.png", notes=notes)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(w1, w2)
    assert notes == []
    # LA: grey and alpha
    la = np.dstack([np.full((3, 3), 200), np.array([[0, 51, 255]] * 3)]).astype(np.uint8)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    pts, w = read_file(tmp_path / "la.png")
    np.testing.assert_allclose(np.sort(w), [40.0] * 3 + [200.0] * 3)
    # a grey PNG with a transparent colour key (tRNS): that grey level carries no mass
    g = np.array([[10, 20], [20, 30]], dtype=np.uint8)
    Image.fromarray(g, mode="L").save(tmp_path / "key.png", transparency=20)
    pts, w = read_file(tmp_path / "key.png")
    np.testing.assert_array_equal(np.sort(w), [10.0, 30.0])
