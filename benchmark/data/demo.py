"""The demo corpora: English speech synthesised offline with eSpeak NG, with prosody per emotion.

`python -m benchmark data demo` builds the `eval` pool, whose emotion labels the SER task learns.
The `backbone` pool trains the suite's own tiny HuBERT (`--backbone demo`) without emotion labels
and shares neither speakers nor sentences with the eval pool (`POOLS` defines both).

Speakers are eSpeak NG voices in female/male pairs, one pair per `group`, so leave-one-group-out
folds are speaker-independent and gender-balanced. Sentences say nothing about the emotion; the
emotion sets the prosody relative to the speaker, following `benchmark/explain/expert_cues.yaml`.
Descriptors are written from the *measured* cues (`benchmark.data.cues.descriptor_levels`).
A build is deterministic per (size, seed, pool), cached, atomic, and validated before reuse
(`data demo --rebuild` replaces a damaged one). docs/design.md has the design, docs/demo.md the checks.
"""

from __future__ import annotations

import itertools
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from benchmark.config import benchmark_home
from benchmark.data.audio import SAMPLE_RATE, resample, write_wav
from benchmark.data.builds import BUILD_INFO, atomic_build, check_replaceable, read_build_info
from benchmark.data.cues import DESCRIPTOR_CUES, batch_cues, descriptor_levels
from benchmark.data.espeak import Prosody, synthesise
from benchmark.data.manifest import Utterance, read_manifest, write_manifest
from benchmark.data.prepare import DEMO_REBUILD_HINT
from benchmark.errors import BenchmarkError

DEFAULT_SIZE = 420  # 105 per emotion, 42 or so per speaker
BUILD_VERSION = 2  # bump when anything below changes the audio or the manifest
EMOTIONS = ("neutral", "happy", "angry", "sad")
BASE_VOLUME = 65  # eSpeak amplitude of a neutral utterance: leaves headroom for loud ones
SNR_DB = (25.0, 40.0)  # range of the background-noise signal-to-noise ratio
PEAK = 0.98  # the loudest sample a file may have; louder files are scaled down to it
TILT_CORNER_HZ = 500.0  # spectral tilt (`tilt_spectrum`) starts here: eGeMAPS's slope500-1500 band
CUE_WORKERS = 2  # threads measuring cues (at most the machine's cores)

PoolName = Literal["eval", "backbone"]


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an eSpeak NG accent and voice variant, and its own baseline."""

    id: str
    language: str  # eSpeak NG voice name: the accent (en-us, en, en-gb-scotland, ...)
    variant: str  # a variant in espeak-ng-data/voices/!v: the timbre (f1..f5, m1..m8, named ones)
    gender: Literal["female", "male"]
    group: str  # cross-validation group
    pitch: int  # base pitch, eSpeak units (0-100, 50 = the variant's own)
    rate: int  # base rate, words per minute

    @property
    def voice(self) -> str:
        return f"{self.language}+{self.variant}"


@dataclass(frozen=True)
class ProsodyShift:
    """A change of eSpeak prosody relative to a speaker's baseline.

    About 6 pitch units make a semitone; `volume` and `rate` are factors. `tilt` changes the
    spectral tilt, which eSpeak's amplitude leaves alone although vocal effort moves it in real
    speech (a louder voice has relatively more high-frequency energy): dB per octave above
    `TILT_CORNER_HZ`, see `tilt_spectrum`.
    """

    pitch: float
    range: float
    volume: float
    rate: float
    tilt: float


PROFILES = {
    "neutral": ProsodyShift(pitch=0, range=0, volume=1.0, rate=1.0, tilt=0.0),
    "happy": ProsodyShift(pitch=12, range=40, volume=1.15, rate=1.25, tilt=0.0),
    # A small raise of the tilt only: at 3 dB/octave openSMILE's F0 tracking already made octave
    # errors (the F0 standard deviation of one voice doubled), which would fake anger's F0
    # variability and, through lost voicing, its speaking rate.
    "angry": ProsodyShift(pitch=14, range=35, volume=1.5, rate=1.25, tilt=1.5),
    "sad": ProsodyShift(pitch=-20, range=-35, volume=0.6, rate=0.72, tilt=-6.0),
}
# Standard deviations of the per-utterance variation (volume and rate as fractions; tilt in dB/octave).
VARIATION = ProsodyShift(pitch=4, range=5, volume=0.1, rate=0.04, tilt=0.3)

# The sentence grammar: 20 x 20 x 10 = 4000 sentences, all emotionally neutral.
_SUBJECTS = (
    "My brother", "The old man", "Our neighbour", "The new teacher", "Her cousin", "The driver",
    "A young doctor", "His aunt", "The manager", "My friend", "The girl next door", "Our landlord",
    "The farmer", "Your uncle", "The student", "The pilot", "My grandmother", "The baker",
    "The nurse", "A tall stranger",
)  # fmt: skip
_ACTIONS = (
    "opened the kitchen window", "carried the boxes upstairs", "painted the garden fence",
    "bought a new lamp", "moved the table to the hall", "wrote a letter to the bank",
    "parked the car near the station", "read the notice on the door", "brought the chairs inside",
    "cleaned the blue van", "locked the back door", "called the office", "planted tomatoes in the yard",
    "fixed the old radio", "counted the coins on the desk", "sold the piano", "washed the dishes",
    "packed the red suitcase", "checked the train times", "sorted the mail",
)  # fmt: skip
_TIMES = (
    "this morning", "on Tuesday", "after lunch", "last week", "before the meeting", "in the afternoon",
    "yesterday", "at nine o'clock", "on Sunday evening", "after the rain",
)  # fmt: skip
EVAL_SENTENCES = 480  # the eval pool's share; the backbone pool gets the other 3520
_SENTENCE_SPLIT_SEED = 20240601  # fixed, so the two pools stay disjoint whatever the build seed


def _sentences() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """All grammar sentences shuffled once with a fixed seed, split into (eval, backbone)."""
    sentences = [f"{s} {a} {t}." for s, a, t in itertools.product(_SUBJECTS, _ACTIONS, _TIMES)]
    random.Random(_SENTENCE_SPLIT_SEED).shuffle(sentences)
    return tuple(sentences[:EVAL_SENTENCES]), tuple(sentences[EVAL_SENTENCES:])


@dataclass(frozen=True)
class Pool:
    """A disjoint set of speakers and sentences, and what its manifest rows say."""

    name: PoolName
    dataset: str  # the manifest's `dataset` field and the default folder name
    speakers: tuple[Speaker, ...]
    sentences: tuple[str, ...]
    labelled: bool  # emotion and descriptor fields; False for the backbone pool


_Voice = tuple[str, str, int, int]  # (language, variant, base pitch, base rate)


def _pairs(prefix: str, pairs: tuple[tuple[_Voice, _Voice], ...]) -> tuple[Speaker, ...]:
    """Speakers from (female, male) voice pairs; pair k is group k, so every group has both genders."""
    speakers = []
    for group, pair in enumerate(pairs, start=1):
        for gender, (language, variant, pitch, rate) in zip(("female", "male"), pair, strict=True):
            speaker_id = f"{prefix}{len(speakers) + 1:02d}"
            speakers.append(Speaker(speaker_id, language, variant, gender, str(group), pitch, rate))
    return tuple(speakers)


# Male variants were picked among those whose F0 openSMILE still tracks when lowered (sadness) and
# get a slightly raised base pitch for the same reason: a lost F0 track would inflate the rate.
_EVAL_VOICES = (
    (("en-us", "f1", 48, 170), ("en-us", "m3", 56, 175)),
    (("en", "f2", 52, 165), ("en", "m6", 58, 180)),
    (("en-gb-scotland", "f3", 46, 175), ("en-gb-scotland", "m5", 54, 165)),
    (("en-gb-x-rp", "f4", 54, 180), ("en-gb-x-rp", "m7", 55, 170)),
    (("en-us-nyc", "f5", 50, 185), ("en-us-nyc", "m2", 60, 160)),
)
_BACKBONE_VOICES = (
    (("en-us", "linda", 50, 175), ("en-us", "michel", 56, 170)),
    (("en", "belinda", 48, 180), ("en", "gustave", 58, 165)),
    (("en-029", "Annie", 52, 170), ("en-029", "travis", 55, 180)),
    (("en-gb-x-rp", "steph", 50, 165), ("en-gb-scotland", "Denis", 57, 175)),
    (("en-us-nyc", "aunty", 46, 185), ("en", "max", 56, 160)),
)
_EVAL_SENTENCES, _BACKBONE_SENTENCES = _sentences()
POOLS: dict[str, Pool] = {
    "eval": Pool("eval", "demo", _pairs("s", _EVAL_VOICES), _EVAL_SENTENCES, labelled=True),
    "backbone": Pool(
        "backbone", "demo-backbone", _pairs("b", _BACKBONE_VOICES), _BACKBONE_SENTENCES, labelled=False
    ),
}

# Descriptor wording: a phrase per cue level, and templates picked per utterance by the seed.
PITCH_PHRASES = {"low": "a low pitch", "normal": "a normal pitch", "high": "a high pitch"}
ENERGY_PHRASES = {"low": "a quiet voice", "normal": "a voice of normal volume", "high": "a loud voice"}
SPEED_PHRASES = {"low": "slowly", "normal": "at a normal pace", "high": "quickly"}
TEMPLATES = (
    "A {gender} speaker with {pitch} and {energy} speaks {speed}, sounding {emotion}.",
    "Speaking {speed} in {energy} with {pitch}, the {gender} speaker sounds {emotion}.",
    "The {gender} speaker talks {speed} with {pitch} and {energy}; the tone is {emotion}.",
)


def describe(gender: str, levels: dict[str, str], emotion: str, template: int) -> str:
    """A SpeechCraft-style descriptor from cue levels (`pitch`, `energy`, `speed` -> low/normal/high)."""
    return TEMPLATES[template].format(
        gender=gender,
        pitch=PITCH_PHRASES[levels["pitch"]],
        energy=ENERGY_PHRASES[levels["energy"]],
        speed=SPEED_PHRASES[levels["speed"]],
        emotion=emotion,
    )


def default_out_dir(pool: PoolName = "eval") -> Path:
    return benchmark_home() / "datasets" / POOLS[pool].dataset


@dataclass(frozen=True)
class _Plan:
    """What one utterance will be, fixed before any audio is made."""

    id: str
    speaker: Speaker
    emotion: str
    sentence: str
    prosody: Prosody
    tilt: float
    snr_db: float
    template: int


def _plan(pool: Pool, size: int, seed: int) -> list[_Plan]:
    """Balanced assignment: utterance i has emotion i mod 4 and speaker (i div 4) mod speakers.

    So every emotion has size/4 utterances and every speaker all four emotions equally often.
    Sentences are a seeded permutation of the pool's, independent of the emotion.
    """
    order = np.random.default_rng([seed, 0]).permutation(len(pool.sentences))
    plans = []
    for i in range(size):
        emotion = EMOTIONS[i % len(EMOTIONS)]
        speaker = pool.speakers[(i // len(EMOTIONS)) % len(pool.speakers)]
        rng = np.random.default_rng([seed, 1, i])
        shift, noise = PROFILES[emotion], rng.standard_normal(5)
        prosody = Prosody(
            pitch=round(speaker.pitch + shift.pitch + VARIATION.pitch * noise[0]),
            range=round(50 + shift.range + VARIATION.range * noise[1]),
            volume=round(BASE_VOLUME * shift.volume * (1 + VARIATION.volume * noise[2])),
            rate=round(speaker.rate * shift.rate * (1 + VARIATION.rate * noise[3])),
        ).clipped()
        name = f"{speaker.id}_{emotion}_{i:04d}" if pool.labelled else f"{speaker.id}_{i:04d}"
        plans.append(
            _Plan(
                id=f"{pool.dataset}_{name}",
                speaker=speaker,
                emotion=emotion,
                sentence=pool.sentences[order[i % len(order)]],
                prosody=prosody,
                tilt=float(shift.tilt + VARIATION.tilt * noise[4]),
                snr_db=float(rng.uniform(*SNR_DB)),
                template=int(rng.integers(len(TEMPLATES))),
            )
        )
    return plans


def tilt_spectrum(wave: np.ndarray, tilt: float) -> np.ndarray:
    """Tilt the spectrum of `wave` above `TILT_CORNER_HZ` by `tilt` dB per octave, at the same RMS.

    A positive tilt gives relatively more high-frequency energy (more vocal effort), a negative one
    less. The gain is applied to the whole utterance's spectrum (zero phase) and is 0 dB below the
    corner, so the fundamental keeps its level. A first-order pre-emphasis filter with a comparable
    500-1500 Hz effect attenuates the fundamental, and openSMILE's F0 tracking then jumped octaves
    on male voices.
    """
    if tilt == 0:
        return wave
    spectrum = np.fft.rfft(wave.astype(np.float64))
    frequencies = np.fft.rfftfreq(len(wave), 1 / SAMPLE_RATE)
    octaves = np.log2(np.maximum(frequencies, TILT_CORNER_HZ) / TILT_CORNER_HZ)
    tilted = np.fft.irfft(spectrum * 10 ** (tilt * octaves / 20), n=len(wave))
    rms_in, rms_out = np.sqrt(np.mean(wave.astype(np.float64) ** 2)), np.sqrt(np.mean(tilted**2))
    return (tilted * (rms_in / rms_out if rms_out > 0 else 1.0)).astype(np.float32)


def _render(plan: _Plan, seed: int, index: int) -> np.ndarray:
    """Synthesise one utterance at 16 kHz with background noise, scaled down only if it would clip."""
    wave, rate = synthesise(plan.sentence, plan.speaker.voice, plan.prosody)
    wave = tilt_spectrum(resample(wave, rate, SAMPLE_RATE), plan.tilt)
    rng = np.random.default_rng([seed, 2, index])
    noise_rms = np.sqrt(np.mean(wave**2)) * 10 ** (-plan.snr_db / 20)
    wave = wave + (noise_rms * rng.standard_normal(len(wave))).astype(np.float32)
    peak = float(np.abs(wave).max())
    return wave * (PEAK / peak) if peak > PEAK else wave


def _build_info(size: int, seed: int, pool: PoolName) -> dict[str, object]:
    return {"size": size, "seed": seed, "pool": pool, "version": BUILD_VERSION}


def _rebuild_hint(pool: PoolName, out_dir: Path) -> str:
    """How to replace a damaged cached build (the backbone pool is only built on demand)."""
    if pool == "eval":
        return DEMO_REBUILD_HINT
    return f"delete {out_dir}; it is synthesised again when next needed"


def build_demo_corpus(
    size: int = DEFAULT_SIZE,
    seed: int = 0,
    out_dir: Path | None = None,
    pool: PoolName = "eval",
    progress: bool = True,
    rebuild: bool = False,
) -> Path:
    """Build (or reuse) a demo corpus; returns the path of its manifest, `all.jsonl`.

    `out_dir` defaults to `$BENCHMARK_HOME/datasets/demo` (eval pool) or `.../demo-backbone`
    (backbone pool); it holds `all.jsonl`, `wav/<id>.wav` (16 kHz mono PCM16) and `build.json`.
    A folder holding the same build is validated (every manifest line, every wav present) and
    returned as it is; a different earlier build, or any build with `rebuild`, is replaced.
    """
    if pool not in POOLS:
        raise BenchmarkError(f"unknown demo pool '{pool}'", hint=f"choose one of {sorted(POOLS)}")
    if size < 1:
        raise BenchmarkError(f"demo corpus size must be positive, got {size}")
    out_dir = (out_dir or default_out_dir(pool)).expanduser().resolve()
    info = _build_info(size, seed, pool)
    manifest = out_dir / "all.jsonl"
    if not rebuild and manifest.is_file() and read_build_info(out_dir) == info:
        read_manifest(manifest, check_audio=True, rebuild_hint=_rebuild_hint(pool, out_dir))
        return manifest
    check_replaceable(out_dir, BUILD_INFO, "a demo corpus")
    with atomic_build(out_dir, info) as tmp:
        rows = _synthesise_corpus(POOLS[pool], size, seed, tmp, out_dir, progress)
        write_manifest(tmp / "all.jsonl", rows)
    return manifest


def _synthesise_corpus(
    pool: Pool, size: int, seed: int, work_dir: Path, out_dir: Path, progress: bool
) -> list[Utterance]:
    """Write every wav into `work_dir/wav`; the rows point at their final place in `out_dir`."""
    plans = _plan(pool, size, seed)
    paths = [work_dir / "wav" / f"{plan.id}.wav" for plan in plans]
    durations = []
    for index, plan in enumerate(tqdm(plans, desc=f"synthesising ({pool.name})", disable=not progress)):
        wave = _render(plan, seed, index)
        write_wav(paths[index], wave)
        durations.append(len(wave) / SAMPLE_RATE)
    descriptors: list[str | None] = [None] * size
    if pool.labelled:
        workers = min(CUE_WORKERS, os.cpu_count() or 1)
        cues = batch_cues(paths, [plan.sentence for plan in plans], workers=workers, progress=progress)
        measured = descriptor_levels(cues, [plan.speaker.id for plan in plans])
        for i, (plan, levels) in enumerate(zip(plans, measured, strict=True)):
            # A cue that could not be measured (no voiced frame) is described as normal.
            levels = {dim: levels.get(dim, "normal") for dim in DESCRIPTOR_CUES}
            descriptors[i] = describe(plan.speaker.gender, levels, plan.emotion, plan.template)
    return [
        Utterance(
            id=plan.id,
            audio=str(out_dir / "wav" / f"{plan.id}.wav"),
            duration=durations[i],
            transcript=plan.sentence,
            emotion=plan.emotion if pool.labelled else None,
            descriptor=descriptors[i],
            speaker=plan.speaker.id,
            gender=plan.speaker.gender,
            group=plan.speaker.group,
            dataset=pool.dataset,
            language="en",  # English sentences and descriptors (eSpeak's English voices)
        )
        for i, plan in enumerate(plans)
    ]
