"""The explanation page: self-contained, its audio and figure true to the explanation, and working
in a real browser (headless Chromium, `tests/browser.py`). The explanation is built from its parts
on a synthetic recording (real eGeMAPS frames, evidence and claims; a hand-made saliency map)."""

from __future__ import annotations

import base64
import io
import math
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from browser import headless_chromium

from benchmark.data.audio import SAMPLE_RATE, load_audio
from benchmark.data.cues import frame_cues
from benchmark.data.manifest import Utterance
from benchmark.data.records import PredictionRecord
from benchmark.explain.deletion import Deletion, random_windows, utterance_seed
from benchmark.explain.evidence import (
    cue_evidence,
    descriptor_evidence,
    region_stats,
    stretch_baseline,
    window_mask,
)
from benchmark.explain.expert_cues import CUE_NAMES
from benchmark.explain.explanation import Explanation
from benchmark.explain.page import explanation_page, index_page, write_page
from benchmark.explain.saliency import SaliencyMap, top_windows

DURATION = 2.0
TRANSCRIPT = 'say <b>&" loud'


def voiced_recording(path: Path) -> Path:
    """2 s: a gliding harmonic tone, a quiet unvoiced gap (0.8-1.1 s: F0 has a hole) and a louder
    tone whose loudness swells, so every track of the figure has something to show."""
    t = np.arange(int(DURATION * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = np.where(t < 0.8, 180 + 40 * t, 150 + 30 * np.sin(2 * np.pi * t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    tone = sum(np.sin(k * phase) / k for k in range(1, 6))
    amplitude = np.where(t < 0.8, 0.2, 0.15 + 0.25 * np.clip((t - 1.1) / 0.5, 0, 1))
    amplitude[(t >= 0.8) & (t < 1.1)] = 0.0
    noise = np.random.default_rng(0).normal(0, 0.003, len(t))
    sf.write(path, (amplitude * tone / 2 + noise).astype(np.float32), SAMPLE_RATE)
    return path


@pytest.fixture
def explanation(tmp_path: Path) -> Explanation:
    audio = voiced_recording(tmp_path / "utt.wav")
    row = Utterance(
        id="spk1/utt 1", audio=str(audio), duration=DURATION, transcript=TRANSCRIPT, emotion="angry",
        descriptor="A man speaks loudly.", speaker="spk1", gender="male", group="1", dataset="synthetic",
    )  # fmt: skip
    record = PredictionRecord(
        id=row.id, ref_emotion="angry", hyp_emotion="angry", ref_transcript=TRANSCRIPT,
        hyp_transcript=TRANSCRIPT, ref_descriptor=row.descriptor,
        hyp_descriptor="A man speaks fast with a high pitch and loud volume.", raw_output=None, fold="1",
    )  # fmt: skip
    values = np.full(40, 0.1)
    values[5:8], values[30:33], values[36:39] = 4.0, 6.0, 2.0
    times = np.arange(40) * 0.05
    saliency = SaliencyMap(times, 0.05, values, DURATION, "occlusion", "log p(angry)", "silence")
    windows = top_windows(saliency, k=3)
    spans = [(w.start, w.end) for w in windows]
    frames = frame_cues(audio)
    baseline = replace(stretch_baseline(frames), source="the recording itself: its 4 stretches of 0.5 s")
    evidence = cue_evidence(frames, spans, "angry", baseline, utterance_id=row.id)
    window_cues = [
        {cue: s.value for cue, s in region_stats(frames, window_mask(frames.index, [span])).items()}
        for span in spans
    ]
    control = tuple(random_windows(DURATION, len(spans), 0.15, utterance_seed(row.id)))
    deletion = Deletion(row.id, 0.9, 0.4, 0.8, control)
    claims = descriptor_evidence(record.hyp_descriptor, evidence)
    return Explanation("1", row, record, saliency, windows, window_cues, evidence, claims, deletion, baseline)


class Elements(HTMLParser):
    """Every start tag of a page with its attributes, in document order."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def find(self, tag: str, **wanted: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in wanted.items())]


def decoded(uri: str | None) -> np.ndarray:
    prefix = "data:audio/flac;base64,"
    assert uri is not None and uri.startswith(prefix)
    wave, rate = sf.read(io.BytesIO(base64.b64decode(uri[len(prefix) :])), dtype="float32")
    assert rate == SAMPLE_RATE and wave.ndim == 1
    return wave


def test_the_page_holds_the_explanation_and_fetches_nothing(explanation: Explanation):
    probabilities = {"neutral": 0.1, "angry": 0.7, "sad": 0.2}
    html = explanation_page(explanation, title="utt 1: angry", run_id="run<1>", probabilities=probabilities)
    page = Elements(html)
    links = [a[k] for _, a in page.tags for k in ("src", "href") if a.get(k)]
    assert links and not [link for link in links if link.startswith(("http:", "https:", "//"))]
    assert all("src" not in a for a in page.find("script")) and not page.find("link", rel="stylesheet")

    wave = load_audio(explanation.row.audio)
    (recording,) = page.find("audio", id="recording")
    assert len(decoded(recording["src"])) == len(wave)
    clips = page.find("audio", **{"class": "window-clip"})
    assert len(clips) == len(explanation.windows) == 3
    for clip, window in zip(clips, explanation.windows, strict=True):
        assert abs(len(decoded(clip["src"])) - (window.end - window.start) * SAMPLE_RATE) <= 1

    rects = page.find("rect", **{"class": "window"})
    assert [(float(r["data-start"]), float(r["data-end"])) for r in rects] == [
        (w.start, w.end) for w in explanation.windows
    ]
    assert page.find("svg", id="figure") and page.find("path", id="envelope")
    assert page.find("line", id="playhead")
    assert len(page.find("polyline")) >= 2  # F0 in two voiced runs at least, and loudness

    titles = {a.get("title") for _, a in page.tags}
    for key in explanation.evidence.cues:
        assert CUE_NAMES[key] in html and key in titles
    assert "Juslin" in html  # the expert table's citations
    assert "(weak)" in html  # jitter, shimmer and HNR are weak cues for anger

    assert 'say &lt;b&gt;&amp;&quot; loud' in html and TRANSCRIPT not in html
    assert "run&lt;1&gt;" in html
    assert "0.900" in html and "0.400" in html and "0.800" in html  # the deletion test
    assert "the recording itself: its 4 stretches of 0.5 s" in html
    assert html.index(">angry<") < html.index(">sad<") < html.index(">neutral<")  # sorted probabilities
    assert "pitch" in html and "of the measured claims agree" in html


def test_index_links_every_page(explanation: Explanation, tmp_path: Path):
    other = replace(explanation, row=explanation.row.model_copy(update={"id": "spk1/utt2", "emotion": None}))
    html = index_page([(explanation, "spk1_utt_1.html"), (other, "spk1_utt2.html")], "run <x>")
    page = Elements(html)
    assert [a["href"] for a in page.find("a")] == ["spk1_utt_1.html", "spk1_utt2.html"]
    assert "run &lt;x&gt;" in html and "+0.500" in html
    write_page(tmp_path / "new" / "folder" / "index.html", html)
    assert (tmp_path / "new" / "folder" / "index.html").read_text(encoding="utf-8") == html
    assert [p.name for p in (tmp_path / "new" / "folder").iterdir()] == ["index.html"]  # no temporary left


def test_the_page_plays_and_draws_in_chromium(explanation: Explanation, tmp_path: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    path = tmp_path / "page.html"
    write_page(path, explanation_page(explanation, title="in a browser", run_id="r1"))
    duration = len(load_audio(explanation.row.audio)) / SAMPLE_RATE
    with headless_chromium() as driver:
        driver.get(path.as_uri())
        ready = "return [...document.querySelectorAll('audio')].every(a => a.readyState >= 1)"
        WebDriverWait(driver, 20).until(lambda d: d.execute_script(ready))
        recording = driver.execute_script("return document.getElementById('recording').duration")
        assert recording == pytest.approx(duration, abs=0.05)
        clips = driver.execute_script(
            "return [...document.querySelectorAll('.window-clip')].map(a => a.duration)"
        )
        assert len(clips) == 3 and all(math.isfinite(d) and d > 0 for d in clips)
        box = driver.execute_script("return document.querySelector('#figure').getBoundingClientRect()")
        assert box["width"] > 100 and box["height"] > 100
        assert driver.find_elements(By.CSS_SELECTOR, "#figure #envelope")
        rects = driver.find_elements(By.CSS_SELECTOR, "#figure rect.window")
        assert len(rects) == 3
        for rect in rects:
            rect.click()
            now = driver.execute_script("return document.getElementById('recording').currentTime")
            assert now == pytest.approx(float(rect.get_attribute("data-start")), abs=0.1)
        severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not severe, severe
