"""One report, two renderings: Markdown with PNG files next to it, and a self-contained HTML page.

A report is a title and a list of `Section`s (text, an optional plot, an optional table, optional code).
`render_markdown` links the PNGs by file name; `render_html` embeds them as base64 `data:` URIs, with
inline CSS and no script and no external resource, so the HTML file alone is the whole report (it can
be mailed, attached to a CI run, or opened offline). All text is HTML-escaped.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Section", "render_html", "render_markdown"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.note { color: #555; font-size: 0.9em; }
"""


@dataclass
class Section:
    """A part of a report. `level` 2 is a section, 3 a subsection."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    image: str | None = None  # file name of a PNG in the report directory
    image_alt: str = ""
    table: tuple[list[str], list[list[str]]] | None = None
    code: str | None = None
    level: int = 2


def render_markdown(title: str, sections: list[Section]) -> str:
    """Markdown; images are referenced by their file name (they sit next to the .md file)."""
    lines = [f"# {title}", ""]
    for s in sections:
        lines += ["#" * s.level + f" {s.title}", ""]
        for p in s.paragraphs:
            lines += [p, ""]
        if s.image:
            lines += [f"![{s.image_alt or s.title}]({s.image})", ""]
        if s.table:
            headers, rows = s.table
            lines.append("| " + " | ".join(headers) + " |")
            lines.append("|" + "---|" * len(headers))
            lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
            lines.append("")
        if s.code:
            lines += ["```python", s.code.strip(), "```", ""]
    return "\n".join(lines)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_html(title: str, sections: list[Section], image_dir: Path) -> str:
    """A self-contained HTML page: every image of `image_dir` it shows is embedded as a data URI."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    for s in sections:
        parts.append(f"<h{s.level}>{esc(s.title)}</h{s.level}>")
        parts += [f"<p>{esc(p)}</p>" for p in s.paragraphs]
        if s.image:
            path = Path(image_dir) / s.image
            if path.exists():
                parts.append(f'<p><img src="{_data_uri(path)}" alt="{esc(s.image_alt or s.title)}" data-file="{esc(s.image)}"></p>')
            else:
                parts.append(f'<p class="note">(plot {esc(s.image)} missing)</p>')
        if s.table:
            headers, rows = s.table
            parts.append("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr></thead><tbody>")
            parts += ["<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in rows]
            parts.append("</tbody></table>")
        if s.code:
            parts.append(f"<pre><code>{esc(s.code.strip())}</code></pre>")
    parts.append("</body></html>")
    return "\n".join(parts)
