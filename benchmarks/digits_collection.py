"""The scikit-learn digits (1,797 images of 8 x 8 pixels, bundled with scikit-learn: no download) as an otpipe
collection: each image is the measure of its pixels with positive intensity, at the pixel centres, weighted
by the intensity (exactly what ``otpipe ingest`` makes of the same images saved as PNG files), labelled by
the digit.

Usage::

    python benchmarks/digits_collection.py OUT.zarr [--n N]
"""
from __future__ import annotations

import argparse

__all__ = ["make"]


def make(out: str, n: int | None = None) -> int:
    """Write the collection of the first ``n`` digits (all by default) to ``out``; returns the count."""
    from sklearn.datasets import load_digits

    from otpipe import store
    from otpipe.store.readers import image_to_measure

    d = load_digits()
    k = len(d.images) if n is None else min(int(n), len(d.images))
    measures = []
    for i in range(k):
        pts, w = image_to_measure(d.images[i], 16.0)
        measures.append(store.Measure(pts, w, f"d{i:04d}", str(int(d.target[i]))))
    store.create(out, measures, dtype="float32", overwrite=True)
    return k


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=None, help="only the first N digits")
    args = ap.parse_args(argv)
    print(f"{make(args.out, args.n)} digits -> {args.out}")


if __name__ == "__main__":
    main()
