"""A known asymmetric image (an 'L') and checks of its orientation in a rendered PNG."""
from __future__ import annotations

import numpy as np
from PIL import Image

from otpipe.store import Measure
from otpipe.store.readers import image_to_measure

__all__ = ["L_IMAGE", "l_measure", "dark_component", "assert_upright_l"]

#: an 'L' in an 8 x 8 image: a vertical arm of 6 pixels (column 1, rows 1..6) and a foot of 4 (row 6)
L_IMAGE = np.zeros((8, 8))
L_IMAGE[1:7, 1] = 1.0
L_IMAGE[6, 1:5] = 1.0


def l_measure(name="L", label="L") -> Measure:
    pts, w = image_to_measure(L_IMAGE, 1.0)  # the reader otpipe ingest uses for image files
    return Measure(pts, w, name, label)


def dark_component(png, threshold: int = 100) -> np.ndarray:
    """Boolean mask of the largest connected dark region of a PNG (the drawn shape, not the text)."""
    from scipy import ndimage

    with Image.open(png) as im:
        a = np.asarray(im.convert("L"), dtype=float)
    lab, n = ndimage.label(a < threshold)
    assert n > 0, "nothing dark in the picture"
    sizes = ndimage.sum(np.ones_like(a), lab, index=range(1, n + 1))
    return lab == (1 + int(np.argmax(sizes)))


def assert_upright_l(mask: np.ndarray) -> None:
    """The mask is an upright 'L': taller than wide (6 : 4), ink in the bottom-left corner and along the
    left and bottom edges, none in the top-right quadrant (a transposed or flipped L fails one of these)."""
    rows, cols = np.nonzero(mask)
    box = mask[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    h, w = box.shape
    assert 1.3 < h / w < 1.7, f"height/width {h / w:.2f}, expected 6/4 (a transposed L gives 4/6)"
    assert box[-max(1, h // 10):, : max(1, w // 10)].mean() > 0.9, "no ink in the bottom-left corner"
    assert box[: h // 2, w // 2:].mean() < 0.05, "ink in the top-right quadrant"
    assert box[:, : w // 5].mean() > 0.8 and box[-h // 7:, :].mean() > 0.8, "no vertical arm on the left or no foot"
