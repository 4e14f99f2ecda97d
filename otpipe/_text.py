"""Text made safe for a terminal line (shared by the CLI and the store's messages)."""
from __future__ import annotations

__all__ = ["escape"]

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(s: str) -> str:
    r"""``s`` with every non-printable character escaped: one line, no terminal control.

    Parameters
    ----------
    s : str
        The text.

    Returns
    -------
    str
        ``s`` itself when printable; else with ``\n``, ``\r``, ``\t`` named and other non-printable characters
        as ``\xNN``, ``\uNNNN`` or ``\UNNNNNNNN``.
    """
    if s.isprintable():
        return s
    out = []
    for ch in s:
        if ch.isprintable():
            out.append(ch)
        elif ch in _NAMED:
            out.append(_NAMED[ch])
        else:
            c = ord(ch)
            out.append(f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}" if c < 0x10000 else f"\\U{c:08x}")
    return "".join(out)
