"""HTML reports (``sipwake replay --html DIR``): one page per scenario and an index.

Each page is self-contained (inline CSS, no scripts, no external files): the verdict,
each expectation met or missed with what happened, and the ladder as an SVG diagram —
one column per party (callers, sipwake, devices, the push service, voicemail, the
gateway), time going down, an arrow per SIP message or push (dashed and red when it
was lost, with why), and the server's call steps and the devices' changes as notes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from html import escape
from pathlib import Path

from sipwake.scenario.record import LadderRow, Replay
from sipwake.scenario.report import ScenarioResult

__all__ = ["ladder_svg", "page_name", "scenario_page", "write_html"]

_COL = 170
_LEFT = 70
_TOP = 50
_ROW = 22
_NOTE_ROOM = 420

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.3em} .pass{color:#17702b} .fail{color:#b3261e} .error{color:#b3261e}
table{border-collapse:collapse;margin:1em 0} td,th{border:1px solid #ccc;padding:4px 8px;
text-align:left;vertical-align:top;font-size:.9em} .met{color:#17702b} .missed{color:#b3261e}
.desc{max-width:60em} svg{border:1px solid #ddd;background:#fff}
"""


def page_name(path: str) -> str:
    """The HTML file name of a scenario file's page."""
    stem = Path(path).stem or "scenario"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem) + ".html"


def _text(x: float, y: float, text: str, **attrs: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{escape(v)}"' for k, v in attrs.items())
    return f'<text x="{x:.0f}" y="{y:.0f}"{extra}>{escape(text)}</text>'


def ladder_svg(replay: Replay) -> str:
    """The ladder of ``replay`` as an SVG element (see the module text)."""
    columns = replay.columns
    if not columns:
        return "<p>(nothing happened)</p>"
    index = {name: i for i, name in enumerate(columns)}

    def x(name: str) -> float:
        return _LEFT + index.get(name, 0) * _COL + _COL / 2

    rows = replay.rows
    height = _TOP + _ROW * (len(rows) + 1)
    width = _LEFT + _COL * len(columns) + _NOTE_ROOM
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="monospace" font-size="11">',
        "<defs>"
        '<marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#333"/></marker>'
        '<marker id="lost" viewBox="0 0 10 10" refX="5" refY="5" markerWidth="8" '
        'markerHeight="8"><path d="M0,0 L10,10 M10,0 L0,10" stroke="#b3261e" '
        'stroke-width="2"/></marker>'
        "</defs>",
        _text(8, 24, "time", font_weight="bold"),
    ]
    for name in columns:
        cx = x(name)
        out.append(_text(cx, 24, name, text_anchor="middle", font_weight="bold"))
        out.append(
            f'<line x1="{cx:.0f}" y1="32" x2="{cx:.0f}" y2="{height - 8}" '
            'stroke="#bbb" stroke-dasharray="2,3"/>'
        )
    for i, row in enumerate(rows):
        y = _TOP + _ROW * i + _ROW / 2
        out.append(_text(8, y + 4, f"{row.at:.3f}", fill="#666"))
        out.append(_row_svg(row, y, x, _LEFT + _COL * len(columns)))
    out.append("</svg>")
    return "\n".join(out)


def _row_svg(row: LadderRow, y: float, x: Callable[[str], float], notes_x: float) -> str:
    if not row.dst:
        cx = x(row.src)
        return (
            f'<circle cx="{cx:.0f}" cy="{y:.0f}" r="3" fill="#7a5af8"/>'
            f'<line x1="{cx:.0f}" y1="{y:.0f}" x2="{notes_x:.0f}" y2="{y:.0f}" '
            'stroke="#e4dcff" stroke-width="1"/>'
            + _text(notes_x + 6, y + 4, f"{row.src}: {row.label}", fill="#5b3fc4")
        )
    a, b = x(row.src), x(row.dst)
    mid = (a + b) / 2
    if row.lost:
        line = (
            f'<line x1="{a:.0f}" y1="{y:.0f}" x2="{b:.0f}" y2="{y:.0f}" stroke="#b3261e" '
            'stroke-dasharray="5,3" marker-end="url(#lost)"/>'
        )
        return (
            line
            + _text(mid, y - 3, row.label, text_anchor="middle", fill="#b3261e")
            + _text(notes_x + 6, y + 4, f"lost: {row.lost}", fill="#b3261e")
        )
    color = "#0b57d0" if "push" in row.label or row.src == "push" or row.dst == "push" else "#333"
    line = (
        f'<line x1="{a:.0f}" y1="{y:.0f}" x2="{b:.0f}" y2="{y:.0f}" stroke="{color}" '
        'marker-end="url(#arrow)"/>'
    )
    return line + _text(mid, y - 3, row.label, text_anchor="middle", fill=color)


def scenario_page(result: ScenarioResult) -> str:
    """One scenario's page: verdict, expectations, ladder."""
    scenario = result.scenario
    title = scenario.name if scenario is not None else result.path
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        '<p><a href="index.html">all scenarios</a></p>',
    ]
    if result.error is not None:
        parts.append(f'<h1 class="error">ERROR {escape(result.path)}</h1>')
        parts.append(f"<pre>{escape(str(result.error))}</pre></body></html>")
        return "\n".join(parts)
    assert scenario is not None
    word, cls = ("PASS", "pass") if result.passed else ("FAIL", "fail")
    parts.append(f'<h1><span class="{cls}">{word}</span> {escape(title)}</h1>')
    parts.append(f"<p><code>{escape(result.path)}</code>")
    record = result.replay
    if record is not None:
        how = (
            f"real time, {record.end:.1f} of {scenario.duration_s:g} s"
            if record.clock == "real"
            else f"virtual clock, {scenario.duration_s:g} s"
        )
        if record.target:
            how += f", against {record.target}"
        parts.append(f" — {escape(how)}, {record.messages} SIP messages")
    parts.append("</p>")
    if scenario.description:
        parts.append(f'<p class="desc">{escape(scenario.description)}</p>')
    parts.append("<table><tr><th></th><th>expectation</th><th>what happened</th></tr>")
    for check in result.checks:
        mark, cls = ("met", "met") if check.met else ("MISSED", "missed")
        parts.append(
            f'<tr><td class="{cls}">{mark}</td><td>{escape(check.kind)}: '
            f"{escape(check.expected)}</td><td>{escape(check.got)}</td></tr>"
        )
    parts.append("</table>")
    if record is not None:
        parts.append("<h2>Ladder</h2>")
        parts.append(ladder_svg(record))
    parts.append("</body></html>")
    return "\n".join(parts)


def _index(results: list[ScenarioResult]) -> str:
    passed = sum(r.passed for r in results)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>sipwake replay</title>',
        f"<style>{_CSS}</style></head><body>",
        f"<h1>sipwake replay: {passed}/{len(results)} scenarios passed</h1>",
        "<table><tr><th>verdict</th><th>scenario</th><th>file</th></tr>",
    ]
    for result in results:
        if result.error is not None:
            word, cls = "ERROR", "error"
        else:
            word, cls = ("PASS", "pass") if result.passed else ("FAIL", "fail")
        name = result.scenario.name if result.scenario is not None else ""
        parts.append(
            f'<tr><td class="{cls}">{word}</td>'
            f'<td><a href="{escape(page_name(result.path))}">{escape(name or result.path)}</a>'
            f"</td><td><code>{escape(result.path)}</code></td></tr>"
        )
    parts.append("</table></body></html>")
    return "\n".join(parts)


def write_html(results: list[ScenarioResult], directory: Path) -> list[Path]:
    """Write one page per result and ``index.html`` into ``directory``; the pages."""
    directory.mkdir(parents=True, exist_ok=True)
    pages = []
    for result in results:
        page = directory / page_name(result.path)
        page.write_text(scenario_page(result), encoding="utf-8")
        pages.append(page)
    (directory / "index.html").write_text(_index(results), encoding="utf-8")
    return pages
