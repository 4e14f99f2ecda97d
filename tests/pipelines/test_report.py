"""otpipe report (old --out FILE.png form): PNG + HTML from a real result; the 1-NN accuracy against a brute-force count."""
from __future__ import annotations

import numpy as np
from PIL import Image

from otpipe.cli import main
from otpipe.pipelines.pairwise import pairwise
from otpipe.report.distances import classical_mds


def test_report_files_and_accuracy(client, small, other, tmp_path, capsys):
    out = tmp_path / "r.zarr"
    ds = pairwise(small, client=client, out=out, tile=4, progress=False)
    S, lab = ds.divergence.values, np.array([str(v) for v in ds.source_label.values])
    hits = 0
    for i in range(len(S)):
        best = min((S[i, j], j) for j in range(len(S)) if j != i)[1]
        hits += lab[best] == lab[i]
    main(["report", str(out), "--out", str(tmp_path / "fig.png")])
    text = capsys.readouterr().out
    assert f"accuracy: {hits / len(S):.3f}" in text
    im = Image.open(tmp_path / "fig.png")
    assert im.size[0] > 800 and im.size[1] > 400
    page = (tmp_path / "fig.html").read_text()  # the old --out FILE.png form: the page next to the PNG
    assert "src='fig.png'" in page and "accuracy" in page
    # a cross run: heatmap + histogram
    pairwise(small, other, client=client, out=tmp_path / "x.zarr", tile=4, progress=False)
    main(["report", str(tmp_path / "x.zarr"), "--out", str(tmp_path / "x.png")])
    assert (tmp_path / "x.png").is_file()


def test_classical_mds_recovers_planar_distances():
    rng = np.random.default_rng(0)
    P = rng.normal(size=(12, 2))
    D = np.linalg.norm(P[:, None] - P[None], axis=-1)
    Y = classical_mds(D)
    assert np.allclose(np.linalg.norm(Y[:, None] - Y[None], axis=-1), D, atol=1e-9)
