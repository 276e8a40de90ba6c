from __future__ import annotations

import pytest

from benchmark.data.tasks import (
    ParsedResponse,
    format_response,
    parse_response,
    response_prefix,
    task_response,
)

IEMOCAP = ["angry", "happy", "neutral", "sad"]
MELD = ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]


def test_format_keeps_the_field_order_and_leaves_out_missing_fields():
    assert format_response("hello there", "a loud voice", "angry") == (
        "Transcript: hello there\nDescriptor: a loud voice\nEmotion: angry"
    )
    assert format_response("hello there", None, None) == "Transcript: hello there"  # ASR
    assert format_response(None, "a soft voice", "sad") == "Descriptor: a soft voice\nEmotion: sad"  # SER-SED
    assert format_response("two\nlines", None, None) == "Transcript: two lines"
    with pytest.raises(ValueError):
        format_response(None, None, None)


@pytest.mark.parametrize(
    ("transcript", "descriptor", "emotion"),
    [("hi there", "a male speaker, high pitch", "happy"), ("yes", None, None), (None, "slow speed", "sad")],
)
def test_format_then_parse_round_trips(transcript, descriptor, emotion):
    parsed = parse_response(format_response(transcript, descriptor, emotion), IEMOCAP)
    assert (parsed.transcript, parsed.descriptor, parsed.emotion) == (transcript, descriptor, emotion)
    assert parsed.valid_emotion is (emotion is not None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Emotion: angry", "angry"),
        ("emotion: Angry.", "angry"),
        ("EMOTION : 'ANGRY'", "angry"),
        ('Emotion: "anger"!', "angry"),
        ("**Emotion**: happiness", "happy"),
        ("Emotion: excited", "happy"),  # IEMOCAP merges excited into happy
        ("Emotion: joy", "happy"),
        ("Emotion: The speaker sounds sad.", "sad"),
        ("Emotion: neutral\nI hope this helps!", "neutral"),
        ("Emotion：angry", "angry"),  # full-width colon (NFKC)
    ],
)
def test_emotion_is_normalised_onto_the_label_set(text, expected):
    parsed = parse_response(text, IEMOCAP)
    assert parsed.emotion == expected
    assert parsed.valid_emotion


def test_synonyms_follow_the_label_set_spelling():
    assert parse_response("Emotion: angry", MELD).emotion == "anger"
    assert parse_response("Emotion: happy", MELD).emotion == "joy"
    assert parse_response("Emotion: Sad", MELD).emotion == "sadness"
    assert parse_response("Emotion: scared", MELD).emotion == "fear"
    assert parse_response("Emotion: Happy", ["Happy", "Sad"]).emotion == "Happy"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "I am sorry, I cannot help with that.",
        "Emotion:",
        "Emotion: ",
        "Emotion: frustrated",  # a word outside the label set
        "Emotion: angry or sad",  # two labels named
        "Emotion: happy and sad",
        "Emotion: 😀",
        "Transcript: hello\nDescriptor: a loud voice\nEmo",  # truncated mid-field name
        "Emotionally, angry",  # no field
        "angry",  # a bare label is not a field
    ],
)
def test_unreadable_emotions_are_invalid_not_errors(text):
    parsed = parse_response(text, IEMOCAP)
    assert parsed.emotion is None
    assert parsed.valid_emotion is False


def test_malformed_outputs_never_raise():
    weird = ["\x00", "Emotion: \n\n\n", ":::", "Transcript:" * 50, "é" * 1000, "Emotion: ang"]
    for text in weird:
        assert isinstance(parse_response(text, IEMOCAP), ParsedResponse)
    assert parse_response(None, IEMOCAP) == ParsedResponse(None, None, None, False)  # type: ignore[arg-type]


def test_fields_in_any_order_with_chatter_and_repeats():
    text = (
        "Sure! Here is the caption.\n"
        "emotion: SAD\n"
        "descriptor: a female speaker\nwith low pitch and slow speed\n"
        "TRANSCRIPT: i lost it\n"
        "Emotion: happy\n"
    )
    parsed = parse_response(text, IEMOCAP)
    assert parsed == ParsedResponse(
        transcript="i lost it",
        descriptor="a female speaker with low pitch and slow speed",
        emotion="sad",
        valid_emotion=True,
    )


def test_missing_and_truncated_fields():
    parsed = parse_response("Transcript: the weather is nice\nDescriptor: a male voice, fast sp", IEMOCAP)
    assert parsed.transcript == "the weather is nice"
    assert parsed.descriptor == "a male voice, fast sp"
    assert parsed.emotion is None and not parsed.valid_emotion
    assert parse_response("Descriptor:\nEmotion: sad", IEMOCAP).descriptor is None


def test_unicode_text_survives():
    parsed = parse_response("Transcript: ¿Qué tal? 你好\nEmotion: Happy", IEMOCAP)
    assert parsed.transcript == "¿Qué tal? 你好"
    assert parsed.emotion == "happy"


@pytest.mark.parametrize(
    ("task", "prefix"),
    [("asr", "Transcript:"), ("ser", "Emotion:"), ("ser_sed", "Descriptor:"), ("full", "Transcript:")],
)
def test_a_generation_is_forced_to_start_with_its_task_s_first_field(task, prefix):
    assert response_prefix(task) == prefix
    response = task_response(
        task, {"transcript": "hello there", "descriptor": "a calm voice", "emotion": "sad"}
    )
    assert response.startswith(prefix)
    assert parse_response(response, ["sad"]) == parse_response(response.replace("\n", " "), ["sad"])


def test_a_task_response_needs_every_required_field_and_leaves_out_a_missing_descriptor():
    assert task_response("asr", {"emotion": "sad"}) is None
    assert task_response("full", {"descriptor": "a calm voice", "emotion": "sad"}) is None
    assert task_response("ser_sed", {"emotion": "sad"}) == "Emotion: sad"
    assert task_response("full", {"transcript": "hi", "emotion": "sad", "descriptor": None}) == (
        "Transcript: hi\nEmotion: sad"
    )
