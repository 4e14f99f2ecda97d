"""`otpipe ingest` round trips: files written with each format's own library, read back bit-identical."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image
from plyfile import PlyData, PlyElement

from otpipe import store

from .conftest import assert_same_measure


def _clouds(n=4, dim=3, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [store.Measure(rng.standard_normal((int(rng.integers(5, 60)), dim)).astype(dtype), None, f"cloud{i}") for i in range(n)]


def _weighted(n=4, dim=3, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = int(rng.integers(5, 60))
        out.append(store.Measure(rng.standard_normal((k, dim)).astype(dtype), rng.uniform(0.1, 2, size=k).astype(dtype), f"cloud{i}"))
    return out


def _check(out, ms, dtype=np.float32):
    c = store.open(out)
    assert len(c) == len(ms) and c.verify()
    for m in ms:
        assert_same_measure(c[m.name], m, dtype)
    return c


def test_npy(tmp_path, cli):
    ms = _clouds(dtype=np.float32)
    for m in ms:
        np.save(tmp_path / f"{m.name}.npy", m.points)
    r = cli("ingest", tmp_path, "--out", tmp_path / "out.zarr")
    assert r.code == 0, r.err
    assert "4 measures" in r.out
    _check(tmp_path / "out.zarr", ms)
    # float64 data, stored as float64, weights as the last column
    ws = _weighted(dtype=np.float64, seed=1)
    (tmp_path / "w").mkdir()
    for m in ws:
        np.save(tmp_path / "w" / f"{m.name}.npy", np.column_stack([m.points, m.weights]))
    r = cli("ingest", tmp_path / "w", "--out", tmp_path / "w.zarr", "--weight-column", "-1", "--dtype", "float64")
    assert r.code == 0, r.err
    _check(tmp_path / "w.zarr", ws, np.float64)


def test_npz(tmp_path, cli):
    ws = _weighted(seed=2, dtype=np.float32)
    for m in ws:
        np.savez(tmp_path / f"{m.name}.npz", points=m.points, weights=m.weights)
    np.savez_compressed(tmp_path / "single.npz", np.arange(6.0, dtype=np.float32).reshape(3, 2) * 0 + 1)  # one array = points
    r = cli("ingest", tmp_path / "cloud*.npz", "--out", tmp_path / "out.zarr")
    assert r.code == 0, r.err
    _check(tmp_path / "out.zarr", ws)


def test_csv_savetxt_and_csv_module(tmp_path, cli):
    ws = _weighted(seed=3, dtype=np.float64)
    for m in ws[:2]:  # numpy.savetxt, header, comma, weight column by name
        np.savetxt(tmp_path / f"{m.name}.csv", np.column_stack([m.points, m.weights]), delimiter=",",
                   header="x,y,z,w", comments="", fmt="%.17g")
    for m in ws[2:]:  # csv module, weight column first, no header
        with open(tmp_path / f"{m.name}.csv", "w", newline="") as fh:
            wr = csv.writer(fh)
            for w, p in zip(m.weights, m.points):
                wr.writerow([repr(float(w))] + [repr(float(v)) for v in p])
    r = cli("ingest", tmp_path / "cloud0.csv", tmp_path / "cloud1.csv", "--out", tmp_path / "a.zarr",
            "--weight-column", "w", "--dtype", "float64")
    assert r.code == 0, r.err
    _check(tmp_path / "a.zarr", ws[:2], np.float64)
    r = cli("ingest", tmp_path / "cloud2.csv", tmp_path / "cloud3.csv", "--out", tmp_path / "b.zarr",
            "--weight-column", "0", "--dtype", "float64")
    assert r.code == 0, r.err
    _check(tmp_path / "b.zarr", ws[2:], np.float64)
    # float32 storage: what numpy reads back, cast
    r = cli("ingest", tmp_path / "cloud0.csv", "--out", tmp_path / "c.zarr", "--weight-column", "w")
    assert r.code == 0, r.err
    back = np.loadtxt(tmp_path / "cloud0.csv", delimiter=",", skiprows=1)
    _check(tmp_path / "c.zarr", [store.Measure(back[:, :3], back[:, 3], "cloud0")])


def test_xyz_and_txt(tmp_path, cli):
    ms = _clouds(n=3, seed=4, dtype=np.float64)
    for m in ms:
        np.savetxt(tmp_path / f"{m.name}.xyz", m.points, fmt="%.17g")  # whitespace columns
    np.savetxt(tmp_path / "two_d.txt", ms[0].points[:, :2], fmt="%.17g", delimiter="\t", header="# a comment")
    r = cli("ingest", tmp_path / "*.xyz", "--out", tmp_path / "x.zarr", "--dtype", "float64")
    assert r.code == 0, r.err
    _check(tmp_path / "x.zarr", ms, np.float64)
    r = cli("ingest", tmp_path / "two_d.txt", "--out", tmp_path / "t.zarr", "--dtype", "float64")
    assert r.code == 0, r.err
    _check(tmp_path / "t.zarr", [store.Measure(ms[0].points[:, :2], None, "two_d")], np.float64)


@pytest.mark.parametrize("text", [False, True])
def test_ply_point_clouds_and_meshes(tmp_path, cli, text):
    ws = _weighted(n=3, seed=5, dtype=np.float32)
    for m in ws:
        v = np.empty(m.n, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("intensity", "f4"), ("red", "u1")])
        v["x"], v["y"], v["z"] = m.points.T
        v["intensity"], v["red"] = m.weights, 7
        PlyData([PlyElement.describe(v, "vertex")], text=text).write(str(tmp_path / f"{m.name}.ply"))
    r = cli("ingest", tmp_path, "--out", tmp_path / "p.zarr", "--weight-column", "intensity")
    assert r.code == 0, r.err
    _check(tmp_path / "p.zarr", ws)
    # a mesh (tetrahedron): vertices, uniform weights, faces ignored
    verts = np.array([(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)], dtype=[("x", "f8"), ("y", "f8"), ("z", "f8")])
    faces = np.array([([0, 1, 2],), ([0, 1, 3],), ([0, 2, 3],), ([1, 2, 3],)], dtype=[("vertex_indices", "i4", (3,))])
    (tmp_path / "mesh").mkdir()
    PlyData([PlyElement.describe(verts, "vertex"), PlyElement.describe(faces, "face")], text=text).write(str(tmp_path / "mesh" / "tet.ply"))
    r = cli("ingest", tmp_path / "mesh", "--out", tmp_path / "m.zarr", "--format", "ply")
    assert r.code == 0, r.err
    pts = np.stack([verts["x"], verts["y"], verts["z"]], axis=1)
    _check(tmp_path / "m.zarr", [store.Measure(pts, None, "tet")])


def _expected_image(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Independent statement of the image convention: pixel centres, y up, zero pixels dropped."""
    h = a.shape[0]
    pts, w = [], []
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            if a[i, j] > 0:
                pts.append((j + 0.5, h - i - 0.5))
                w.append(a[i, j])
    return np.array(pts, dtype=np.float64), np.array(w, dtype=np.float64)


def test_png_8_and_16_bit(tmp_path, cli):
    rng = np.random.default_rng(6)
    a8 = rng.integers(0, 256, size=(9, 13), dtype=np.uint8)
    a8[0, :] = 0
    Image.fromarray(a8, mode="L").save(tmp_path / "gray8.png")
    a16 = rng.integers(0, 65536, size=(7, 5), dtype=np.uint16)
    Image.fromarray(a16).save(tmp_path / "gray16.png")
    rgb = rng.integers(0, 256, size=(6, 4, 3), dtype=np.uint8)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "colour.png")
    r = cli("ingest", tmp_path, "--out", tmp_path / "i.zarr", "--format", "png")
    assert r.code == 0, r.err
    want = []
    for name in ("colour", "gray16", "gray8"):
        with Image.open(tmp_path / f"{name}.png") as im:  # what Pillow reads back
            arr = np.asarray(im.convert("L") if im.mode == "RGB" else im).astype(np.float64)
        p, w = _expected_image(arr)
        want.append(store.Measure(p, w, name))
    np.testing.assert_array_equal(_expected_image(a8.astype(float))[1], want[2].weights)
    _check(tmp_path / "i.zarr", want)


def test_jpg_compares_to_what_pillow_reads(tmp_path, cli):
    rng = np.random.default_rng(7)
    a = (rng.random((16, 16)) * 200 + 20).astype(np.uint8)
    Image.fromarray(a, mode="L").save(tmp_path / "photo.jpg", quality=70)
    r = cli("ingest", tmp_path / "photo.jpg", "--out", tmp_path / "j.zarr")
    assert r.code == 0, r.err
    with Image.open(tmp_path / "photo.jpg") as im:
        back = np.asarray(im, dtype=np.float64)
    assert not np.array_equal(back, a)  # lossy
    p, w = _expected_image(back)
    _check(tmp_path / "j.zarr", [store.Measure(p, w, "photo")])


def test_image_invert_threshold_downsample_known_answer(tmp_path, cli):
    a = np.array([[255, 0, 10, 10], [255, 255, 0, 100], [1, 2, 3, 4]], dtype=np.uint8)
    Image.fromarray(a, mode="L").save(tmp_path / "img.png")
    r = cli("ingest", tmp_path / "img.png", "--out", tmp_path / "inv.zarr", "--invert", "--threshold", "200")
    assert r.code == 0, r.err
    m = store.open(tmp_path / "inv.zarr")["img"]
    # inverted: [[0,255,245,245],[0,0,255,155],[254,253,252,251]] -> >= 200 kept
    np.testing.assert_array_equal(m.weights, [255, 245, 245, 255, 254, 253, 252, 251])
    np.testing.assert_array_equal(m.points[:3], [[1.5, 2.5], [2.5, 2.5], [3.5, 2.5]])
    r = cli("ingest", tmp_path / "img.png", "--out", tmp_path / "ds.zarr", "--downsample", "2")
    assert r.code == 0, r.err
    m = store.open(tmp_path / "ds.zarr")["img"]
    # 2x2 block sums of the first two rows (last row cropped): [[765, 120]]
    np.testing.assert_array_equal(m.weights, [765, 120])
    np.testing.assert_array_equal(m.points, [[1.0, 1.0], [3.0, 1.0]])


def test_labels_from_parent_and_manifest_names_relpath(tmp_path, cli):
    rng = np.random.default_rng(8)
    for lab in ("cats", "dogs"):
        (tmp_path / "data" / lab).mkdir(parents=True)
        for k in range(3):
            np.save(tmp_path / "data" / lab / f"{lab}{k}.npy", rng.random((5, 2)).astype(np.float32))
    (tmp_path / "data" / "README.md").write_text("not data")  # unknown extensions in folders are skipped
    r = cli("ingest", tmp_path / "data", "--out", tmp_path / "p.zarr", "--labels", "parent")
    assert r.code == 0, r.err
    c = store.open(tmp_path / "p.zarr")
    assert dict(zip(c.names, c.labels)) == {f"{lab}{k}": lab for lab in ("cats", "dogs") for k in range(3)}
    assert c.info()["labels"] == {"cats": 3, "dogs": 3}
    manifest = tmp_path / "labels.csv"
    with open(manifest, "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["file", "label"])
        for lab in ("cats", "dogs"):
            for k in range(3):
                wr.writerow([f"data/{lab}/{lab}{k}.npy", "even" if k % 2 == 0 else "odd"])
    r = cli("ingest", tmp_path / "data", "--out", tmp_path / "m.zarr", "--manifest", manifest, "--names", "relpath")
    assert r.code == 0, r.err
    c = store.open(tmp_path / "m.zarr")
    assert c.names.tolist() == [f"{lab}/{lab}{k}" for lab in ("cats", "dogs") for k in range(3)]
    assert c.labels.tolist() == ["even", "odd", "even"] * 2
    assert len(c.select(label="odd")) == 2


def test_append_and_info_cli(tmp_path, cli):
    rng = np.random.default_rng(9)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for k in range(3):
        np.save(tmp_path / "a" / f"a{k}.npy", rng.random((5, 2)).astype(np.float32))
        np.save(tmp_path / "b" / f"b{k}.npy", rng.random((5, 2)).astype(np.float32))
    assert cli("ingest", tmp_path / "a", "--out", tmp_path / "s.zarr").code == 0
    r = cli("ingest", tmp_path / "b", "--out", tmp_path / "s.zarr", "--append")
    assert r.code == 0, r.err
    c = store.open(tmp_path / "s.zarr")
    assert c.names.tolist() == ["a0", "a1", "a2", "b0", "b1", "b2"] and c.verify()
    r = cli("info", tmp_path / "s.zarr", "--json", "--verify")
    assert r.code == 0, r.err
    import json

    d = json.loads(r.out)
    assert d["n_measures"] == 6 and d["dim"] == 2 and d["verified"] is True and d["hash"] == c.content_hash
    r = cli("info", tmp_path / "s.zarr")
    assert r.code == 0 and "measures    6" in r.out and c.content_hash in r.out
    r = cli("ingest", tmp_path / "a", "--out", tmp_path / "s.zarr", "--overwrite")
    assert r.code == 0, r.err
    assert len(store.open(tmp_path / "s.zarr")) == 3
