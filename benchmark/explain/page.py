"""One explanation as a self-contained HTML page, and an index of such pages.

The page is what a person opens to judge one emotion decision: the recording and each salient
window as playable clips, the figure of `figure.py` drawn as inline SVG (waveform envelope, F0 of
voiced frames only, loudness, saliency as steps, the windows marked), the cue table against the
speaker's baseline and the expert directions, the descriptor's claims, the deletion test and the
prediction beside the reference. It must open anywhere, from a run's artifacts or a mailed file:
nothing is fetched (the audio is FLAC in data URIs, the CSS and a few lines of JS are inline), and
every text is escaped. Clicking the figure seeks the recording, clicking a window plays it, and a
playhead follows playback. `tests/test_explain_page.py` checks it in headless Chromium.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from urllib.parse import quote

import numpy as np
import soundfile as sf

from benchmark.data.audio import SAMPLE_RATE, load_audio
from benchmark.data.builds import atomic_file
from benchmark.data.cues import frame_cues
from benchmark.explain.expert_cues import CUE_NAMES
from benchmark.explain.explanation import Explanation
from benchmark.explain.figure import F0_COLUMN, LOUDNESS_COLUMN

LEFT, PLOT, COLUMNS = 80, 900, 1000  # svg x of the time axis's 0, its width, envelope columns
ROWS = (("waveform", 90), ("F0 (st)", 70), ("loudness", 70), ("saliency", 70))  # label, height
GAP, AXIS = 8, 30
CSS = """body{font:15px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1100px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left}
th{background:#f3f3f3}dl{display:grid;grid-template-columns:max-content 1fr;gap:.1em 1em}dd{margin:0}
td.num{text-align:right}.cite{font-size:85%;color:#555}
#figure{width:100%;height:auto;cursor:pointer}#figure text{font-size:11px;fill:#444}
.track{fill:none;stroke-width:1.5}#f0 .track{stroke:#1f77b4}#loudness .track{stroke:#2ca02c}
#envelope{fill:#555;stroke:#555;stroke-width:.5}#saliency{fill:#d62728;fill-opacity:.5}
#playhead{stroke:#d00;stroke-width:1.5;pointer-events:none}.axis{stroke:#444}
.window{fill:gold;fill-opacity:.3;stroke:#c90}.window:hover{fill-opacity:.5}
.clips li{margin:.3em 0}audio{vertical-align:middle}"""
SCRIPT = """const audio=document.getElementById('recording'),svg=document.getElementById('figure');
const head=document.getElementById('playhead'),left=%s,plot=%s,duration=%s;let stopAt=null;
function seek(t,end){audio.currentTime=t;stopAt=end;audio.play().catch(()=>{});}
svg.addEventListener('click',e=>{const w=e.target.closest('rect.window');
 if(w){seek(+w.getAttribute('data-start'),+w.getAttribute('data-end'));return;}
 const p=new DOMPoint(e.clientX,e.clientY).matrixTransform(svg.getScreenCTM().inverse());
 seek(Math.min(duration,Math.max(0,(p.x-left)/plot*duration)),null);});
function follow(){const x=left+audio.currentTime/duration*plot;
 head.setAttribute('x1',x);head.setAttribute('x2',x);
 if(stopAt!==null&&audio.currentTime>=stopAt){audio.pause();stopAt=null;}}
audio.addEventListener('timeupdate',follow);audio.addEventListener('seeked',follow);"""


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "–" if value is None or not np.isfinite(value) else format(value, spec)


def flac_data_uri(wave: np.ndarray) -> str:
    """A 16 kHz mono waveform as a `data:audio/flac;base64,...` URI (16-bit PCM)."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(wave, -1.0, 1.0), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return "data:audio/flac;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _stat(value: float | None, spread: float | None, frames: int) -> str:
    """A cue over frames: mean ± std (n frames); F0 variability has no spread."""
    counted = f" ({frames} frames)" if frames or spread is not None else ""  # speaking rate counts none
    return _fmt(value) + ("" if spread is None else f" ± {_fmt(spread)}") + counted


def _short(reference: str) -> str:
    """A full reference's authors and year, e.g. 'Juslin, P. N., & Laukka, P. (2003)'."""
    found = re.match(r".+?\(\d{4}\)", reference)
    return found.group(0) if found else reference


def _x(t: float, duration: float) -> float:
    return LEFT + PLOT * t / duration


def _points(xs: Sequence[float], ys: Sequence[float]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))


def _scale(values: np.ndarray, top: float, height: float, low: float, high: float) -> np.ndarray:
    """Values in [low, high] to svg y inside a row, larger values higher (4 px margins)."""
    span = high - low if high > low else 1.0
    return top + height - 4 - (values - low) / span * (height - 8)


def _range(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)


def _envelope(wave: np.ndarray, top: float, height: float, duration: float) -> str:
    """The waveform's min/max over `COLUMNS` columns as one closed path."""
    edges = np.linspace(0, len(wave), min(COLUMNS, len(wave)) + 1).astype(int)[:-1]
    low, high = np.minimum.reduceat(wave, edges), np.maximum.reduceat(wave, edges)
    peak = max(float(np.abs(wave).max()), 1e-9)
    xs = [_x(t, duration) for t in edges / SAMPLE_RATE]
    middle, half = top + height / 2, height / 2 - 2
    outline = _points([*xs, *xs[::-1]], [*(middle - high / peak * half), *(middle - low[::-1] / peak * half)])
    return f'<path id="envelope" d="M{outline.replace(" ", " L")} Z"/>'


def _track(times: np.ndarray, values: np.ndarray, top: float, height: float, duration: float) -> str:
    """One polyline per run of finite values: NaN (an unvoiced frame) leaves a gap."""
    ys = _scale(values, top, height, *_range(values))
    edges = np.flatnonzero(np.diff(np.r_[False, np.isfinite(values), False]))  # run starts, ends
    return "".join(
        f'<polyline class="track" points="{_points([_x(t, duration) for t in times[a:b]], ys[a:b])}"/>'
        for a, b in zip(edges[::2], edges[1::2], strict=True)
    )


def _saliency_steps(explanation: Explanation, top: float, height: float, duration: float) -> str:
    """The saliency map shaded as steps from its zero line: bin i spans [times[i], times[i] + hop)."""
    s = explanation.saliency
    values = np.asarray(s.values, dtype=float)
    low, high = _range(np.r_[values, 0.0])
    ys, base = _scale(values, top, height, low, high), float(_scale(np.zeros(1), top, height, low, high)[0])
    starts = [_x(t, duration) for t in s.times]
    ends = [_x(min(t + s.hop, duration), duration) for t in s.times]
    xs = [x for pair in zip(starts, ends, strict=True) for x in pair]
    steps = [y for y in ys for _ in range(2)]
    drawn = _points([xs[0], *xs, xs[-1]], [base, *steps, base]) if xs else ""
    return f'<polygon id="saliency" points="{drawn}"/>'


def _ticks(duration: float, bottom: float) -> str:
    steps = (0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)
    step = next((s for s in steps if duration / s <= 12), duration / 10)
    parts = [f'<line x1="{LEFT}" y1="{bottom}" x2="{LEFT + PLOT}" y2="{bottom}" class="axis"/>']
    for t in np.arange(0, duration + 1e-9, step):
        x = _x(float(t), duration)
        parts.append(f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 5}" class="axis"/>')
        parts.append(f'<text x="{x:.1f}" y="{bottom + 17}" text-anchor="middle">{t:g}</text>')
    parts.append(f'<text x="{LEFT + PLOT}" y="{bottom + 30}" text-anchor="end">time (s)</text>')
    return "".join(parts)


def _window_rect(start: float, end: float, saliency: float, duration: float, bottom: float) -> str:
    x0, x1 = _x(start, duration), _x(end, duration)
    return (
        f'<rect class="window" data-start="{start!r}" data-end="{end!r}" x="{x0:.1f}" y="{GAP}" '
        f'width="{x1 - x0:.1f}" height="{bottom - GAP}"><title>{start:.2f}–{end:.2f} s, saliency '
        f"{saliency:.3g}</title></rect>"
    )


def figure_svg(explanation: Explanation, wave: np.ndarray) -> str:
    """The inline SVG: the four rows on one time axis, the windows across them, the playhead."""
    duration = len(wave) / SAMPLE_RATE
    frames = frame_cues(explanation.row.audio)
    times = frames.index.to_numpy(dtype=float)
    f0, windows = frames[F0_COLUMN].to_numpy(dtype=float), explanation.windows
    loudness = frames[LOUDNESS_COLUMN].to_numpy(dtype=float)
    tops = [GAP + sum(h + GAP for _, h in ROWS[:i]) for i in range(len(ROWS))]
    (wt, wh), (ft, fh), (lt, lh), (st, sh) = ((t, h) for t, (_, h) in zip(tops, ROWS, strict=True))
    bottom = st + sh + GAP
    labels = zip(tops, ROWS, strict=True)
    parts = [f'<text x="4" y="{t + h / 2:.0f}">{escape(label)}</text>' for t, (label, h) in labels]
    parts += [
        _envelope(wave, wt, wh, duration),
        f'<g id="f0">{_track(times, np.where(f0 > 0, f0, np.nan), ft, fh, duration)}</g>',
        f'<g id="loudness">{_track(times, loudness, lt, lh, duration)}</g>',
        _saliency_steps(explanation, st, sh, duration),
        _ticks(duration, bottom),
        *(_window_rect(float(w.start), float(w.end), w.saliency, duration, bottom) for w in windows),
        f'<line id="playhead" x1="{LEFT}" y1="{GAP}" x2="{LEFT}" y2="{bottom}"/>',
    ]
    size = f'viewBox="0 0 {LEFT + PLOT + 20} {bottom + AXIS + 4}"'
    return f'<svg id="figure" {size} role="img">{"".join(parts)}</svg>'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], **attributes: str) -> str:
    """A table of already escaped cells."""
    extra = "".join(f' {k}="{escape(v)}"' for k, v in attributes.items())
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cells) + "</tr>" for cells in rows)
    return f"<table{extra}><tr>{head}</tr>{body}</table>"


def _td(text: str, cls: str = "", title: str = "") -> str:
    attrs = (f' class="{cls}"' if cls else "") + (f' title="{escape(title)}"' if title else "")
    return f"<td{attrs}>{escape(text)}</td>"


def _cue_table(explanation: Explanation) -> str:
    """One row per cue: the eGeMAPS key is the name cell's tooltip, the full references the citation's."""
    rows = []
    for key, c in explanation.evidence.cues.items():
        inside = _stat(c.inside, c.inside_spread, c.inside_frames)
        outside = _stat(c.outside, c.outside_spread, c.outside_frames)
        cited = "; ".join(_short(reference) for reference in c.citation)
        expected = "–" if c.expected is None else c.expected + (" (weak)" if c.weak else "")
        rows.append([
            _td(CUE_NAMES.get(key, key), title=key), _td(c.scope), _td(inside, "num"),
            _td("–" if c.scope == "utterance" else outside, "num"), _td(_fmt(c.z), "num"), _td(expected),
            _td(c.verdict or "–"), _td(cited, "cite", "\n".join(c.citation)),
        ])  # fmt: skip
    header = ("cue", "scope", "inside windows", "outside", "z vs speaker", "experts expect", "verdict")
    header += ("citation",)
    return _table(header, rows, id="cues")


def _claims(explanation: Explanation) -> str:
    claims = explanation.claims
    if not claims.claims:
        return "<p>The descriptor makes no pitch, energy or speed claim that the cues can check.</p>"
    rows = [
        [_td(c.attribute), _td(c.claimed), _td(c.measured or "–"),
         _td(CUE_NAMES.get(c.cue, c.cue), title=c.cue), _td(_fmt(c.z), "num"), _td(c.verdict)]
        for c in claims.claims
    ]  # fmt: skip
    share = "" if claims.share is None else f"<p>{claims.share:.0%} of the measured claims agree.</p>"
    return _table(("claim", "says", "measured", "cue", "z", "verdict"), rows, id="claims") + share


def _sentences(explanation: Explanation, run_id: str) -> str:
    """The deletion test, the baseline the z-scores are against, and what was explained."""
    d, b, s = explanation.deletion, explanation.baseline, explanation.saliency
    deletion = (
        f"p({explanation.record.hyp_emotion}) is {d.original:.3f} on the recording as it is, "
        f"{d.top:.3f} with the top {len(explanation.windows)} windows occluded and {d.random:.3f} with "
        f"{len(d.random_windows)} random windows occluded (excess drop {d.excess_drop:+.3f})."
    )
    baseline = f"The z-scores are against {b.source or 'speaker ' + b.speaker}."
    pooled = [CUE_NAMES.get(cue, cue) for cue, used in b.pooled.items() if used and b.utterances.get(cue)]
    if pooled:
        baseline += f" The speaker has too few values of {', '.join(pooled)}: the corpus's stand in."
    if absent := [CUE_NAMES.get(cue, cue) for cue, count in b.utterances.items() if not count]:
        baseline += f" No baseline for {', '.join(absent)}: unmeasured."
    method = f"Saliency: {s.method} of {s.target} against {s.baseline}; "
    method += f"run {run_id}, fold {explanation.fold or '–'}."
    return "".join(f"<p>{escape(text)}</p>" for text in (deletion, baseline, method))


def _prediction(explanation: Explanation, probabilities: Mapping[str, float] | None) -> str:
    """The decision beside the reference (where the row has one), and the label probabilities."""
    row, record = explanation.row, explanation.record
    pairs = [
        ("utterance", row.id), ("predicted emotion", record.hyp_emotion), ("reference emotion", row.emotion),
        ("predicted transcript", record.hyp_transcript), ("reference transcript", row.transcript),
        ("predicted descriptor", record.hyp_descriptor), ("reference descriptor", row.descriptor),
    ]  # fmt: skip
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in pairs if v is not None)
    out = f"<dl>{items}</dl>"
    if probabilities:
        ranked = sorted(probabilities.items(), key=lambda item: -item[1])
        cells = [[_td(label), _td(f"{p:.3f}", "num")] for label, p in ranked]
        out += _table(("label", "probability"), cells, id="probabilities")
    return out


def _clips(explanation: Explanation, wave: np.ndarray) -> str:
    items = []
    for w in explanation.windows:
        uri = flac_data_uri(wave[round(w.start * SAMPLE_RATE) : round(w.end * SAMPLE_RATE)])
        items.append(
            f'<li><audio class="window-clip" controls preload="auto" src="{uri}"></audio> '
            f"{w.start:.2f}–{w.end:.2f} s, saliency {w.saliency:.3g}</li>"
        )
    return f'<ol class="clips">{"".join(items)}</ol>'


def _document(title: str, body: str) -> str:
    head = f'<meta charset="utf-8"><title>{escape(title)}</title><link rel="icon" href="data:,">'
    return (
        f'<!DOCTYPE html><html lang="en"><head>{head}<style>{CSS}</style></head>'
        f"<body><h1>{escape(title)}</h1>{body}</body></html>\n"
    )


def explanation_page(
    explanation: Explanation, *, title: str, run_id: str, probabilities: Mapping[str, float] | None = None
) -> str:
    """The page of one explanation (module docstring); `probabilities` (label -> p) adds a table."""
    wave = load_audio(explanation.row.audio)
    body = (
        f"{_prediction(explanation, probabilities)}"
        f'<p><audio id="recording" controls preload="auto" src="{flac_data_uri(wave)}"></audio></p>'
        f"{figure_svg(explanation, wave)}<h2>Salient windows</h2>{_clips(explanation, wave)}"
        f"{_sentences(explanation, run_id)}<h2>Cues</h2>{_cue_table(explanation)}"
        f"<h2>The descriptor's claims</h2>{_claims(explanation)}"
        f"<script>{SCRIPT % (LEFT, PLOT, len(wave) / SAMPLE_RATE)}</script>"
    )
    return _document(title, body)


def window_agreement(explanation: Explanation) -> tuple[int, int]:
    """(agreeing, counted) window cues: those with a measured verdict that is not weak."""
    counted = [c for c in explanation.evidence.established() if c.scope == "window"]
    return sum(c.verdict == "agrees" for c in counted), len(counted)


def index_page(entries: Sequence[tuple[Explanation, str]], title: str) -> str:
    """A table linking each page (a file name relative to the index) with its decision's summary."""
    rows = []
    for explanation, name in entries:
        agree, counted = window_agreement(explanation)
        d, link = explanation.deletion, escape(quote(name))
        rows.append([
            f'<td><a href="{link}">{escape(explanation.row.id)}</a></td>',
            _td(explanation.row.emotion or "–"), _td(explanation.record.hyp_emotion or "–"),
            _td(f"{d.original - d.top:+.3f}", "num"),
            _td(f"{agree}/{counted}" if counted else "–", "num"),
        ])  # fmt: skip
    header = ("utterance", "reference", "predicted", "deletion drop (p original − top)", "window cues agree")
    return _document(title, _table(header, rows, id="index"))


def write_page(path: Path, html: str) -> None:
    """Write a page atomically (a temporary file beside it, renamed over it), making its folder."""
    with atomic_file(Path(path)) as handle:
        handle.write(html)
