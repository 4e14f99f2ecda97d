"""One HTML page (``index.html`` + its PNG figures) built from headings, paragraphs, tables and figures."""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Page", "ReportFiles"]

_STYLE = ("body{font-family:sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;line-height:1.4}"
          "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
          "th{background:#f3f3f3}img{max-width:100%}figure{margin:1em 0}figcaption{color:#555;font-size:90%}"
          ".note{background:#fff4e0;border-left:4px solid #e69500;padding:.5em 1em}code{font-size:90%}")


@dataclass
class ReportFiles:
    """What :meth:`Page.write` wrote: the page, its PNGs (in page order) and the summary lines.

    Parameters
    ----------
    kind : str
        The kind of result reported (``"distances"``, ``"two_sample"``...).
    html : pathlib.Path
        The HTML page.
    pngs : list of pathlib.Path
        The figures, in page order.
    lines : list of str
        The summary lines.
    notes : list of str
        The warnings shown under the summary.
    """

    kind: str
    html: Path
    pngs: list[Path]
    lines: list[str]
    notes: list[str]

    def as_dict(self) -> dict:
        """The files and lines as JSON-ready values.

        Returns
        -------
        dict
            ``kind``, ``html``, ``pngs`` (paths as strings), ``summary`` (the lines) and ``notes``.
        """
        return {"kind": self.kind, "html": str(self.html), "pngs": [str(p) for p in self.pngs],
                "summary": self.lines, "notes": self.notes}


@dataclass
class Page:
    """A report being built: ``summary`` lines (also printed by ``otpipe report``), then blocks in order.

    Parameters
    ----------
    title : str
        Title of the page.
    kind : str
        The kind of result reported.
    summary : list of str, default []
        Summary lines, shown first.
    notes : list of str, default []
        Warnings, shown in boxes under the summary.
    blocks : list of tuple, default []
        The headings, paragraphs, tables and figures, in page order (added by the methods).
    """

    title: str
    kind: str
    summary: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str) -> None:
        """Add a section heading.

        Parameters
        ----------
        text : str
            The heading.
        """
        self.blocks.append(("h2", text))

    def paragraph(self, text: str) -> None:
        """Add a paragraph.

        Parameters
        ----------
        text : str
            The paragraph's text (escaped, not HTML).
        """
        self.blocks.append(("p", text))

    def note(self, text: str) -> None:
        """Add a warning shown in a box under the summary (and printed by the CLI).

        Parameters
        ----------
        text : str
            The warning.
        """
        self.notes.append(text)

    def table(self, header: list[str], rows: list[list], caption: str | None = None) -> None:
        """Add a table.

        Parameters
        ----------
        header : list of str
            Column headers.
        rows : list of list
            The rows (floats shown with 4 significant digits).
        caption : str or None, default None
            Caption above the table.
        """
        self.blocks.append(("table", header, rows, caption))

    def figure(self, name: str, fig, caption: str = "") -> None:
        """Add a matplotlib figure, saved as ``<name>.png`` when the page is written (and closed then).

        Parameters
        ----------
        name : str
            Name of the figure (its file's stem by default).
        fig : matplotlib.figure.Figure
            The figure.
        caption : str, default ""
            Caption under the figure.
        """
        self.blocks.append(("figure", name, fig, caption))

    def write(self, out_dir, *, page: str = "index.html", png_names: dict | None = None) -> ReportFiles:
        """Write the PNGs and the page into ``out_dir``.

        Parameters
        ----------
        out_dir : str or os.PathLike
            The folder (created if needed).
        page : str, default "index.html"
            File name of the page.
        png_names : dict or None, default None
            Figure names to file names (``"__first__"``: the first figure's file name, the others then
            ``<its stem>-<name>.png``); ``None``: ``<name>.png``.

        Returns
        -------
        ReportFiles
            What was written.
        """
        import matplotlib.pyplot as plt

        e = html.escape
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(self.title)}</title>",
                 f"<style>{_STYLE}</style></head><body><h1>{e(self.title)}</h1>"]
        parts += [f"<p>{e(s)}</p>" for s in self.summary]
        parts += [f"<p class='note'>{e(s)}</p>" for s in self.notes]
        pngs = []
        for b in self.blocks:
            if b[0] == "h2":
                parts.append(f"<h2>{e(b[1])}</h2>")
            elif b[0] == "p":
                parts.append(f"<p>{e(b[1])}</p>")
            elif b[0] == "table":
                _, header, rows, caption = b
                t = ["<table>"] + ([f"<caption>{e(caption)}</caption>"] if caption else [])
                t.append("<tr>" + "".join(f"<th>{e(str(h))}</th>" for h in header) + "</tr>")
                t += ["<tr>" + "".join(f"<td>{e(_cell(c))}</td>" for c in r) + "</tr>" for r in rows]
                parts.append("\n".join(t + ["</table>"]))
            else:
                _, name, fig, caption = b
                names = png_names or {}
                first = names.get("__first__")
                if first:
                    fname = first if not pngs else f"{Path(first).stem}-{name}.png"
                else:
                    fname = names.get(name, f"{name}.png")
                fig.savefig(out / fname, dpi=110)
                plt.close(fig)
                pngs.append(out / fname)
                cap = f"<figcaption>{e(caption)}</figcaption>" if caption else ""
                parts.append(f"<figure><img src='{e(fname)}' alt='{e(name)}'>{cap}</figure>")
        parts.append("</body></html>")
        path = out / page
        path.write_text("\n".join(parts) + "\n")
        return ReportFiles(self.kind, path, pngs, list(self.summary), list(self.notes))


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
