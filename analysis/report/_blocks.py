"""The report's document model and its two renderings.

A report is a flat list of blocks. The sections only build blocks; how a block
looks is decided here, once for Markdown and once for HTML, so the two files
cannot drift apart in content.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import re
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "_Block",
    "_Bullets",
    "_Heading",
    "_Image",
    "_Paragraph",
    "_Table",
    "_html",
    "_markdown",
]


@dataclasses.dataclass(frozen=True)
class _Heading:
    level: int
    text: str


@dataclasses.dataclass(frozen=True)
class _Paragraph:
    text: str


@dataclasses.dataclass(frozen=True)
class _Bullets:
    items: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class _Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclasses.dataclass(frozen=True)
class _Image:
    path: Path
    caption: str


_Block = _Heading | _Paragraph | _Bullets | _Table | _Image


# -- Markdown ------------------------------------------------------------------


def _markdown(blocks: Sequence[_Block]) -> str:
    parts = []
    for block in blocks:
        if isinstance(block, _Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, _Paragraph):
            parts.append(block.text)
        elif isinstance(block, _Bullets):
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, _Table):
            lines = [
                _md_row(block.headers),
                _md_row(tuple("---" for _ in block.headers)),
                *(_md_row(row) for row in block.rows),
            ]
            parts.append("\n".join(lines))
        else:
            parts.append(f"![{_plain(block.caption)}]({block.path.name})\n\n*{block.caption}*")
    return "\n\n".join(parts) + "\n"


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(_md_cell(cell) for cell in cells) + " |"


def _md_cell(text: str) -> str:
    # A pipe inside a cell (the NSL source quotes a table row) would split the cell.
    return " ".join(text.split()).replace("|", "\\|")


# -- HTML ----------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.5em; vertical-align: top; text-align: left; }
th { background: #f3f3f3; }
code { background: #f3f3f3; padding: 0 0.2em; border-radius: 3px; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
"""


def _html(blocks: Sequence[_Block], title: str) -> str:
    body = []
    for block in blocks:
        if isinstance(block, _Heading):
            body.append(f"<h{block.level}>{_inline(block.text)}</h{block.level}>")
        elif isinstance(block, _Paragraph):
            body.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, _Bullets):
            items = "".join(f"<li>{_inline(item)}</li>" for item in block.items)
            body.append(f"<ul>{items}</ul>")
        elif isinstance(block, _Table):
            head = "".join(f"<th>{_inline(cell)}</th>" for cell in block.headers)
            rows = "".join(
                "<tr>" + "".join(f"<td>{_inline(cell)}</td>" for cell in row) + "</tr>"
                for row in block.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        else:
            # Embedded, not linked: the page must stand alone when mailed or archived.
            data = base64.b64encode(block.path.read_bytes()).decode("ascii")
            body.append(
                f'<figure><img alt="{html.escape(_plain(block.caption))}"'
                f' src="data:image/png;base64,{data}">'
                f"<figcaption>{_inline(block.caption)}</figcaption></figure>"
            )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _plain(text: str) -> str:
    """Text without its inline markup, for image alt texts."""
    return re.sub(r"[`*\[\]]", "", " ".join(text.split()))


def _inline(text: str) -> str:
    """The Markdown this report uses inline (code spans, bold) as HTML."""
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
