"""Checks the run the README's main command leaves: every step ran and completed, the report page
exists and every image or page it references is there (a PNG, not empty)."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def main(run_dir: str) -> int:
    run = Path(run_dir)
    prov = json.loads((run / "provenance.json").read_text())
    assert prov.get("complete") is True, "the run is not complete"
    steps = [s["id"] for s in prov["steps"]]
    assert all(s.get("status") == "ran" for s in prov["steps"]), f"steps not run: {prov['steps']}"
    for step in prov["steps"]:  # the matrix's solves converged: no convergence warning on a newcomer's first run
        if step["step"] == "distances":
            import zarr

            out = next((run / step["id"]).glob("*.zarr"))  # the step's folder holds its store
            warning = zarr.open_group(str(out), mode="r").attrs.get("convergence_warning", None)
            assert warning == "", f"{step['id']}: convergence warning {warning!r}"
    page = run / "report" / "index.html"
    text = page.read_text()
    refs = re.findall(r"""(?:src|href)=['"]([^'"#:]+)['"]""", text)
    images = [r for r in refs if r.endswith(".png")]
    assert len(images) >= 4, f"{page} references only {len(images)} images"
    for ref in refs:
        f = page.parent / ref
        assert f.is_file() and f.stat().st_size > 0, f"{page} references {ref}, which is missing or empty"
        if ref.endswith(".png"):
            assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{ref} is not a PNG"
    print(f"report ok: {page} ({len(steps)} steps: {', '.join(steps)}; {len(images)} images, {len(refs)} references)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "runs/quickstart"))
