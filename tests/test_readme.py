"""The README's Python examples run as written (a broken or undefined name in them fails here), each in a
fresh namespace and an empty temporary directory (the collection example writes a store there)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_readme_has_python_examples():
    assert BLOCKS and any("otpipe.SamplesLoss" in b for b in BLOCKS)


@pytest.mark.parametrize("k", range(len(BLOCKS)))
def test_readme_python_block_runs(k, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = compile(BLOCKS[k], f"README.md (python block {k + 1})", "exec")
    namespace: dict = {"__name__": "__readme__"}
    exec(code, namespace)  # noqa: S102 - our own documentation
