"""Property-based checks of the three readers of untrusted input: model output, manifest lines and
config overrides. Each either gives a result or one `BenchmarkError`, never another exception."""

from __future__ import annotations

import json
import math
from functools import reduce
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from benchmark.config import SystemConfig, merge_configs
from benchmark.data.manifest import Utterance, read_manifest
from benchmark.data.tasks import parse_response
from benchmark.errors import BenchmarkError
from benchmark.registry import entries, load_system

DEMO_LABELS = ["neutral", "happy", "angry", "sad"]

# Fragments that steer generated text into the parser's field and label logic.
_FRAGMENTS = st.sampled_from(
    [
        "Transcript:", "Descriptor:", "Emotion:", "**Emotion**:", "emotion :", "Speech descriptor:",
        "angry", "Happy", "sad or angry", "not neutral", "excited", "\n", " ", "“", "ﬁ", "\x00", ":",
    ]
)  # fmt: skip
_RESPONSES = st.one_of(st.text(), st.lists(st.one_of(_FRAGMENTS, st.text(max_size=5))).map("".join))


@settings(max_examples=300, deadline=None)
@given(text=_RESPONSES, labels=st.one_of(st.just(DEMO_LABELS), st.lists(st.text(min_size=1), max_size=4)))
def test_the_response_parser_reads_any_text(text: str, labels: list[str]):
    parsed = parse_response(text, labels)
    assert parsed.emotion is None or parsed.emotion in labels
    assert parsed.valid_emotion == (parsed.emotion is not None)
    for value in (parsed.transcript, parsed.descriptor):
        assert value is None or (value.strip() == value and value and "\n" not in value)


GOOD_ROW = Utterance(
    id="u0", audio="/a/u0.wav", duration=1.5, transcript="hello there", emotion="happy", descriptor=None,
    speaker="s1", gender="female", group="1", dataset="demo",
)  # fmt: skip
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _mutated_row(field: str, value: object) -> bytes:
    """The good row with one field replaced (or removed, for the marker value `...`)."""
    row = GOOD_ROW.model_dump() | {"id": "u1"}
    if value is ...:
        row.pop(field)
    else:
        row[field] = value
    return json.dumps(row).encode()


_LINES = st.one_of(
    st.binary(),
    _JSON.map(lambda value: json.dumps(value).encode()),
    st.builds(_mutated_row, st.sampled_from(sorted(Utterance.model_fields)), st.one_of(st.just(...), _JSON)),
).map(lambda line: line.replace(b"\n", b" "))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(line=_LINES)
def test_a_manifest_line_of_any_bytes_is_a_row_or_an_error_naming_file_and_line(tmp_path: Path, line: bytes):
    path = tmp_path / "all.jsonl"
    path.write_bytes(GOOD_ROW.model_dump_json().encode() + b"\n" + line + b"\n")
    try:
        rows = read_manifest(path)
    except BenchmarkError as err:
        assert err.message.startswith(f"{path}:2: ") and "\n" not in err.message
        return
    assert rows[0] == GOOD_ROW and len(rows) == (1 if not line.strip() else 2)


_KEYS = st.one_of(
    st.sampled_from(
        [
            "beta", "decoder", "lora_r", "lora_alpha", "lora_dropout", "regime", "training", "batch_size",
            "max_grad_norm", "stages", "epochs", "lr", "targets", "adapter", "stack", "bottleneck", "kind",
            "schedule", "ssl", "tiny", "hidden_size", "paper", "disentangle", "title",
        ]
    ),
    st.text(max_size=6),
)  # fmt: skip
_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["lora", "full", "cosine", "asr", "transcript"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
    max_leaves=10,
)


# Real leaf fields, so that many overrides make a valid config and reach the value checks.
_LEAVES = [
    ("beta",), ("decoder", "lora_r"), ("decoder", "lora_alpha"), ("decoder", "lora_dropout"),
    ("training", "max_grad_norm"), ("training", "weight_decay"), ("training", "batch_size"),
    ("adapter", "stack"), ("ssl", "lr"), ("bottleneck", "latent_dim"),
]  # fmt: skip


def _nested(path: tuple[str, ...], value: object) -> dict:
    for key in reversed(path):
        value = {key: value}
    return value  # type: ignore[return-value]


_OVERRIDES = st.one_of(
    st.dictionaries(_KEYS, _VALUES, max_size=4),
    st.lists(st.builds(_nested, st.sampled_from(_LEAVES), _VALUES), max_size=3).map(
        lambda parts: reduce(merge_configs, parts, {})
    ),
)


def _floats(value: object) -> list[float]:
    if isinstance(value, dict):
        return [f for item in value.values() for f in _floats(item)]
    if isinstance(value, list):
        return [f for item in value for f in _floats(item)]
    return [value] if isinstance(value, float) else []


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(sorted(entries("models"))), overrides=_OVERRIDES)
@example(name="full", overrides={"beta": math.inf})
@example(name="full", overrides={"\n": None})
def test_config_overrides_of_any_value_give_a_config_or_one_error(name: str, overrides: dict):
    try:
        config = load_system(name, overrides)
    except BenchmarkError as err:
        assert err.message and "\n" not in err.message
        return
    assert isinstance(config, SystemConfig)
    assert all(math.isfinite(value) for value in _floats(config.model_dump()))
    assert config.decoder.lora_r >= 1 and 0 <= config.decoder.lora_dropout < 1
