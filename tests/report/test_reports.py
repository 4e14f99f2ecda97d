"""``otpipe report`` on every result type, from real runs on a 2-worker LocalCluster: one page (index.html
+ PNGs) per report, every reference present, the numbers it prints against direct computations from the
stored arrays, images upright, both spellings of the two-sample variables, one-line errors."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
from PIL import Image

from otpipe import store
from otpipe.report import result_kind, write_report

from ..images import assert_upright_l, dark_component, l_measure


@pytest.fixture(scope="module")
def client():
    from otpipe.engine.cluster import ClusterSpec, open_client

    with open_client(ClusterSpec(n_workers=2, threads_per_worker=1, memory_limit="1GiB")) as c:
        yield c


@pytest.fixture(scope="module")
def coll(tmp_path_factory):
    """9 labelled 2-D clouds, three families far apart."""
    rng = np.random.default_rng(4)
    ms = [store.Measure(rng.normal(size=(20 + i, 2)) * 0.3 + 3 * (i % 3), None, f"m{i}", f"fam{i % 3}") for i in range(9)]
    return store.create(tmp_path_factory.mktemp("rep") / "c.zarr", ms, dtype="float64")


def check_page(files, pngs: list[str]) -> str:
    """The page exists, references exactly ``pngs`` (in order), and each is a non-trivial PNG."""
    page = files.html.read_text()
    assert files.html.name == "index.html"
    refs = re.findall(r"<img src='([^']+)'", page)
    assert refs == pngs and [p.name for p in files.pngs] == pngs
    for r in refs:
        with Image.open(files.html.parent / r) as im:
            assert im.format == "PNG" and min(im.size) > 200
    return page


def test_distance_matrix_report(client, coll, tmp_path):
    from otpipe.pipelines.pairwise import pairwise

    ds = pairwise(coll.path, client=client, out=tmp_path / "d.zarr", tile=4, progress=False, blur=0.05)
    assert result_kind(tmp_path / "d.zarr") == "distances"
    files = write_report(tmp_path / "d.zarr", tmp_path / "rep")
    page = check_page(files, ["matrix.png", "embedding.png", "convergence.png"])
    text = "\n".join(files.lines)
    # 1-NN accuracy against a brute-force count
    S, lab = ds.divergence.values, np.array([str(v) for v in ds.source_label.values])
    hits = sum(lab[min((S[i, j], j) for j in range(len(S)) if j != i)[1]] == lab[i] for i in range(len(S)))
    assert f"accuracy: {hits / len(S):.3f}" in text
    # convergence summary from the stored marginal errors (off-diagonal pairs), the remedy in a note
    me = ds.marginal_error.values[~np.eye(len(S), dtype=bool)]
    assert f"median {np.median(me):.2g}, max {me.max():.2g}" in text
    assert f"{np.mean(me > 1e-2):.0%} of the {me.size} pairs above 0.01" in text
    if np.mean(me > 1e-2) > 0:
        assert files.notes and "--tol" in files.notes[0] and "--tol" in page
    assert "S_eps: sinkhorn, p = 2, blur = 0.05" in text  # also the colour bar's label
    # the label colour strips: the three tab10 colours of the labels are drawn, unblended
    import matplotlib

    with Image.open(files.pngs[0]) as im:
        rgb = np.asarray(im.convert("RGB")).reshape(-1, 3)
    for k in range(3):
        want = np.round(np.array(matplotlib.colormaps["tab10"](k)[:3]) * 255).astype(int)
        assert (np.abs(rgb.astype(int) - want).max(axis=1) <= 1).sum() > 100, f"no strip of label colour {k}"


def test_converged_matrix_has_no_note(client, coll, tmp_path):
    from otpipe.pipelines.pairwise import pairwise

    ds = pairwise(coll.path, client=client, out=tmp_path / "d.zarr", tile=5, progress=False, blur=0.5, tol=1e-6)
    assert np.nanmax(ds.marginal_error.values) < 1e-2
    files = write_report(tmp_path / "d.zarr", tmp_path / "rep")
    assert not files.notes and "0% of the 72 pairs above 0.01" in "\n".join(files.lines)


@pytest.fixture(scope="module")
def tests_result(client, coll, tmp_path_factory):
    from otpipe.pipelines.two_sample import many_two_sample_tests, write_result

    ds = many_two_sample_tests(coll.path, by="measure", statistic="energy", n_permutations=49, seed=1, client=client)
    return write_result(ds, tmp_path_factory.mktemp("ts") / "t.zarr")


@pytest.mark.parametrize("names", ["old", "scipy"])
def test_two_sample_report(tests_result, tmp_path, names):
    path = tests_result
    ds = xr.open_zarr(path, consolidated=False).load()
    pname = next(n for n in ("pvalue", "p_value") if n in ds)
    if names == "old":  # a store written by otpipe 0.1: p_value (and null) instead of scipy's names
        ds = ds.rename({"pvalue": "p_value"}) if pname == "pvalue" else ds
        pname = "p_value"
    elif pname == "p_value":
        ds = ds.rename({"p_value": "pvalue"})
        pname = "pvalue"
    path = tmp_path / f"{names}.zarr"
    ds.to_zarr(path, consolidated=False)
    ds = xr.open_zarr(path, consolidated=False).load()
    assert pname in ds
    p = ds[pname].values
    files = write_report(path, tmp_path / "rep")
    page = check_page(files, ["pvalues.png", "ranked.png"])
    iu = np.triu_indices(9, 1)
    assert "36 test(s)" in files.lines[0] and "1/50 = 0.02" in files.lines[0]
    counts = (int((p[iu] <= 0.05).sum()), int((ds.p_holm.values[iu] <= 0.05).sum()), int((ds.p_bh.values[iu] <= 0.05).sum()))
    assert (f"uncorrected {counts[0]}; Holm (family-wise error) {counts[1]}; "
            f"Benjamini-Hochberg (false discovery rate) {counts[2]} of 36") in files.lines[1]
    rows = re.findall(r"<tr><td>(m\d)</td><td>(m\d)</td><td>\d+</td><td>\d+</td><td>([^<]+)</td><td>([^<]+)</td>", page)
    assert len(rows) == 36  # one row per distinct test, smallest p first
    got = {(a, b): float(pv) for a, b, _, pv in rows}
    names_ = [str(v) for v in ds.source.values]
    assert got == {(names_[i], names_[j]): float(f"{p[i, j]:.4g}") for i, j in zip(*iu)}
    assert [float(r[3]) for r in rows] == sorted(float(r[3]) for r in rows)


def test_single_test_report_shows_the_null(client, coll, tmp_path):
    from otpipe.pipelines.two_sample import many_two_sample_tests, write_result

    other = store.create(tmp_path / "o.zarr", [store.Measure(np.random.default_rng(1).normal(size=(30, 2)), None, "o0", "x")],
                         dtype="float64")
    ds = many_two_sample_tests(coll.path, other.path, by="collection", statistic="energy", n_permutations=99, client=client)
    ds = ds.rename({k: v for k, v in (("p_value", "pvalue"), ("null", "null_distribution")) if k in ds})
    write_result(ds, tmp_path / "t1.zarr")
    files = write_report(tmp_path / "t1.zarr", tmp_path / "rep")
    check_page(files, ["null.png"])
    assert "1 test(s)" in files.lines[0]


def test_complexity_report(client, tmp_path):
    from otpipe.pipelines.complexity import run_study

    ds = run_study(tmp_path / "c.zarr", eps=(0.1, 1000.0), dims=(2,), ns=(10, 20, 40), reps=3, client=client, figures=None)
    files = write_report(tmp_path / "c.zarr", tmp_path / "rep")
    page = check_page(files, ["decay.png", "rates.png"])
    for i in range(2):
        k, lo, hi = (float(ds[v].values[i, 0]) for v in ("kappa", "kappa_low", "kappa_high"))
        assert f"<td>{k:.3f} [{lo:.2f}, {hi:.2f}]</td>" in page
    assert "<td>0.750</td>" in page  # the paper's OT rate p/d = 1.5/2


def test_barycenter_report_upright_with_flags(client, tmp_path):
    """Barycenters of identical 'L' images are the 'L': drawn upright; flags as the run reported them."""
    from otpipe.pipelines.barycenters import run_barycenter

    ms = [l_measure(f"L{k}", "L") for k in range(3)]
    block = np.zeros((8, 8))
    block[0:2, 6:8] = 1.0  # a small square at the top right: a second group
    from otpipe.store.readers import image_to_measure

    ms += [store.Measure(*image_to_measure(block, 1.0), f"B{k}", "B") for k in range(2)]
    c = store.create(tmp_path / "l.zarr", ms, dtype="float64")
    summary = run_barycenter(c.path, tmp_path / "b.zarr", method="fixed", max_iter=50, client=client)
    assert result_kind(tmp_path / "b.zarr") == "barycenter"
    files = write_report(tmp_path / "b.zarr", tmp_path / "rep")
    page = check_page(files, ["barycenters.png"])
    n_conv = sum(g["converged"] for g in summary["groups"].values())
    assert f"converged: {n_conv} of 2" in files.lines[1]
    for g, info in summary["groups"].items():
        assert f"<tr><td>{g}</td><td>{info['method']}</td><td>{info['n_measures']}</td>" in page
    # the barycenter of the Ls (or their pixel mean, the other largest dark shape) stands upright
    assert_upright_l(dark_component(files.pngs[0]))


def test_cli_report_forms_and_errors(coll, tmp_path, capsys):
    from otpipe.cli import main

    def here(*args):  # the console entry point, in this process
        capsys.readouterr()
        try:
            main(["report", *map(str, args)])
            code = 0
        except SystemExit as exc:
            code = exc.code
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, _ = here(coll.path, "--out", tmp_path / "r")
    assert code == 0 and (tmp_path / "r" / "index.html").is_file() and "9 measures" in out
    code, _, err = here(coll.path, "-o", tmp_path / "old.png")  # the old form: a PNG path, the page next to it
    assert code == 0 and "deprecated" in err
    assert (tmp_path / "old.png").is_file() and "src='old.png'" in (tmp_path / "old.html").read_text()
    code, out, _ = here(coll.path, "-o", tmp_path / "j", "--json")
    assert code == 0 and json.loads(out)["kind"] == "collection"
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "zarr.json").write_text('{"node_type": "group", "attributes": {}}')
    code, _, err = here(tmp_path / "junk", "--out", tmp_path / "x")
    assert code == 1 and "not an otpipe result store" in err and len(err.strip().splitlines()) == 1
    r = subprocess.run([sys.executable, "-m", "otpipe.cli", "report", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip() == f"Error: {tmp_path / 'nothing'}: no such result", r.stderr
    assert not (tmp_path / "x").exists()


def test_report_never_writes_into_a_store(coll, tmp_path, capsys):
    from pathlib import Path

    from otpipe.cli import main

    src = Path(coll.path)
    before = sorted(p.name for p in src.iterdir())
    other = tmp_path / "other.zarr"
    store.create(other, [store.Measure(np.zeros((2, 2)), None, "m0", None)])
    cases = [(src, "is the input"), (src / "sub", "is inside the input"), (other, "is a Zarr store")]
    for out, says in cases:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main(["report", str(src), "--out", str(out)])
        err = capsys.readouterr().err
        assert exc.value.code == 1 and says in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in src.iterdir()) == before and not (src / "sub").exists()
    assert not (other / "index.html").exists()
