"""How a leaderboard board is printed: the board's cells and sections, as md, csv, latex or html.

A `Board` is what every output format shows (`benchmark.leaderboard.board` builds it); the
renderers only lay it out. pandas' to_markdown and to_latex need tabulate and jinja2, which are
not dependencies, so the tables are written here.
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from benchmark.tracking.log import markdown_table

Format = Literal["md", "csv", "latex", "html"]


@dataclass(frozen=True)
class Cell:
    """A printed value (or "–") and its significance markers, kept apart for superscripts."""

    text: str
    marks: str = ""


@dataclass(frozen=True)
class Section:
    """A titled group of rows: a group of the paper's published rows, or the measured rows."""

    title: str
    rows: list[list[Cell]]


@dataclass(frozen=True)
class Board:
    """One leaderboard table as every format shows it: headers, sections, the notes under it."""

    title: str
    headers: list[str]
    sections: list[Section]
    notes: list[str]
    setup: str = ""  # the heading naming the table's setup(s)


def _plain(cell: Cell) -> str:
    return cell.text + cell.marks


def to_markdown(board: Board) -> str:
    rows: list[list[str]] = []
    for section in board.sections:
        rows.append([f"**{section.title}**", *[""] * (len(board.headers) - 1)])
        rows += [[_plain(cell) for cell in row] for row in section.rows]
    notes = "\n".join(f"- {note}" for note in board.notes)
    setup = f"Setup: {board.setup}\n\n" if board.setup else ""
    return f"**{board.title}**\n\n{setup}{markdown_table(board.headers, rows)}\n\n{notes}\n"


def to_csv(board: Board, header: bool = True) -> str:
    """Data only: `setup` and `section` columns and the cells; the notes are in the other formats."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(["setup", "section", *board.headers])
    for section in board.sections:
        writer.writerows([board.setup, section.title, *map(_plain, row)] for row in section.rows)
    return out.getvalue()


LATEX = {
    "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}", "–": "--",
    "✓": r"\checkmark", "✗": r"$\times$", "β": r"$\beta$", "↑": r"$\uparrow$", "↓": r"$\downarrow$",
    "‡": r"$\ddagger$", "∘": r"$\circ$", "†": r"$\dagger$",
}  # fmt: skip


def _latex(text: str) -> str:
    return "".join(LATEX.get(char, char) for char in text)


def _latex_cell(cell: Cell) -> str:
    marks = "".join({"*": "*", "‡": r"\ddagger", "∘": r"\circ", "†": r"\dagger"}[mark] for mark in cell.marks)
    return _latex(cell.text) + (f"$^{{{marks}}}$" if marks else "")


def _titled(board: Board) -> str:
    return f"{board.title}. Setup: {board.setup}" if board.setup else board.title


def to_latex(board: Board) -> str:
    """A booktabs `table` (needs \\usepackage{booktabs,amssymb}), the notes under it."""
    width = len(board.headers)
    lines = [
        r"\begin{table}[t]", r"\centering", rf"\caption{{{_latex(_titled(board))}}}",
        rf"\begin{{tabular}}{{ll{'c' * (width - 2)}}}", r"\toprule",
        " & ".join(map(_latex, board.headers)) + r" \\",
    ]  # fmt: skip
    for section in board.sections:
        lines += [r"\midrule", rf"\multicolumn{{{width}}}{{l}}{{\textit{{{_latex(section.title)}}}}} \\"]
        lines += [" & ".join(map(_latex_cell, row)) + r" \\" for row in section.rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\footnotesize"]
    lines += [rf"{_latex(note)}\par" for note in board.notes]
    return "\n".join([*lines, r"\end{table}"]) + "\n"


def _html_cell(cell: Cell) -> str:
    marks = f"<sup>{html.escape(cell.marks)}</sup>" if cell.marks else ""
    return f"<td>{html.escape(cell.text)}{marks}</td>"


def to_html(board: Board) -> str:
    lines = [
        "<table>",
        f"<caption>{html.escape(board.title)}"
        + (f"<br>Setup: {html.escape(board.setup)}" if board.setup else "")
        + "</caption>",
        "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in board.headers) + "</tr></thead>",
        "<tbody>",
    ]  # fmt: skip
    for section in board.sections:
        lines.append(f'<tr><th colspan="{len(board.headers)}">{html.escape(section.title)}</th></tr>')
        lines += ["<tr>" + "".join(map(_html_cell, row)) + "</tr>" for row in section.rows]
    lines += [
        "</tbody>",
        "</table>",
        "<ul>",
        *(f"<li>{html.escape(note)}</li>" for note in board.notes),
        "</ul>",
    ]
    return "\n".join(lines) + "\n"


FORMATTERS: dict[str, Callable[[Board], str]] = {
    "md": to_markdown,
    "csv": to_csv,
    "latex": to_latex,
    "html": to_html,
}


def render(boards: Board | Sequence[Board], fmt: Format) -> str:
    """One board, or several (one per setup) one after the other; a CSV has one header row."""
    boards = [boards] if isinstance(boards, Board) else list(boards)
    if fmt == "csv":
        return "".join(to_csv(board, header=i == 0) for i, board in enumerate(boards))
    return "\n".join(FORMATTERS[fmt](board) for board in boards)
