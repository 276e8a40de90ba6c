"""Generate a trained system's outputs for held-out utterances and score them.

Each output a system was trained to give is asked for by its own forced response prefix
(`Transcript:`, `Descriptor:`, `Emotion:`), so a system with transcript and descriptor targets
runs twice per utterance. Every number downstream is computed from the records returned here
(docs/architecture.md). Records leave `language` null; `score_records`, which every caller runs
before logging, fills it from the manifest rows (`fill_languages`). Under several processes the
batches are split across ranks and the records gathered on rank 0 (`benchmark.ranks`).
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence

import torch
from tqdm import tqdm

from benchmark.config import DatasetCard, SystemConfig, Task
from benchmark.data.examples import Example, stack_inputs
from benchmark.data.features import FrameEncoder
from benchmark.data.manifest import Utterance
from benchmark.data.records import PredictionRecord
from benchmark.data.tasks import SCORED_FIELD, parse_response, response_prefix
from benchmark.eval.metrics import descriptor_scores, emotion_scores, transcript_scores
from benchmark.nn.system import SpeechEmotionCaptioner
from benchmark.ranks import gather, shard

RECORD_FIELDS = tuple(PredictionRecord.model_fields)


def generation_tasks(system: SystemConfig) -> list[Task]:
    """The generations that cover a system's targets: ASR for the transcript, then SER(-SED)."""
    tasks: list[Task] = []
    if "transcript" in system.targets:
        tasks.append("asr")
    if "descriptor" in system.targets:
        tasks.append("ser_sed")
    elif "emotion" in system.targets:
        tasks.append("ser")
    return tasks


@torch.no_grad()
def predict(
    model: SpeechEmotionCaptioner,
    examples: Sequence[Example],
    labels: Sequence[str],
    fold: str | None,
    batch_size: int = 8,
    progress: bool = True,
    encoder: FrameEncoder | None = None,
    synced: bool = False,
) -> list[dict[str, str | None]]:
    """Prediction records (as dicts with `RECORD_FIELDS`) for `examples`, in their order; `language`
    is None until `score_records` fills it from the manifest rows.

    `encoder` encodes waveform inputs (the online source). With several ranks each predicts its
    share of the batches and rank 0 alone gets the records (the others get []); `synced` (ZeRO-3,
    whose every forward pass is collective) decodes every batch for `max_new_tokens` steps.
    """
    model.eval()
    device = next(model.parameters()).device
    tasks = generation_tasks(model.config)
    order = sorted(range(len(examples)), key=lambda i: examples[i].num_frames or 0)
    plan = [(task, order[k : k + batch_size]) for task in tasks for k in range(0, len(order), batch_size)]
    texts: dict[int, list[str]] = {}
    mine = shard(plan)
    for index, (task, batch) in tqdm(mine, desc="generating", disable=not progress):
        hidden, mask = stack_inputs([examples[i] for i in batch]).to(device).encoded(encoder)
        limit = model.config.decoder.max_new_tokens
        outputs = model.generate(hidden, mask, response_prefix(task), max_new_tokens=limit, synced=synced)
        if index is not None:  # a repeated batch keeps the ranks in step; its output is dropped
            texts[index] = outputs
    gathered = gather(texts, len(plan))
    if gathered is None:
        return []
    raw: dict[str, dict[str, str]] = {ex.id: {} for ex in examples}
    for (task, batch), outputs in zip(plan, gathered, strict=True):
        for i, text in zip(batch, outputs, strict=True):
            raw[examples[i].id][task] = text

    records = []
    for ex in examples:
        parsed = {task: parse_response(text, labels) for task, text in raw[ex.id].items()}
        asr, ser = parsed.get("asr"), parsed.get("ser_sed") or parsed.get("ser")
        records.append(
            {
                "id": ex.id,
                "ref_emotion": ex.emotion,
                "hyp_emotion": ser.emotion if ser else None,
                "ref_transcript": ex.transcript,
                "hyp_transcript": asr.transcript if asr else None,
                "ref_descriptor": ex.descriptor,
                "hyp_descriptor": ser.descriptor if ser else None,
                "raw_output": "\n".join(f"[{task}] {text}" for task, text in raw[ex.id].items()),
                "fold": fold,
                "language": None,
            }
        )
    return records


def fill_languages(
    records: Sequence[MutableMapping[str, str | None]], card: DatasetCard, utterances: Sequence[Utterance]
) -> None:
    """Set each record's `language` (in place) to its manifest row's, or the card's where the row
    has none (a manifest written before rows had a language) or the record has no row here. A
    record that already has a language keeps it."""
    by_id = {u.id: u for u in utterances}
    for record in records:
        if record.get("language") is None:
            row = by_id.get(str(record["id"]))
            record["language"] = row.language_of(card.language) if row else card.language


def scored_fields(card: DatasetCard, system: SystemConfig) -> set[str]:
    """The record fields scored for `system` on `card`: the tasks both the corpus (`card.tasks`)
    and the system's targets have."""
    return {field for task, field in SCORED_FIELD.items() if task in card.tasks} & set(system.targets)


def score_records(
    records: Sequence[dict[str, str | None]],
    card: DatasetCard,
    system: SystemConfig,
    utterances: Sequence[Utterance],
) -> dict[str, float]:
    """The metrics of every scored field (`scored_fields`).

    A missing hypothesis counts as wrong: an unparseable emotion is invalid, a missing transcript
    all deletions. The records' `language` is filled in from `utterances`, the scored rows of the
    manifest, first (`fill_languages`, in place: the records are the ones that get logged).
    Descriptors get the captioning metrics of paper Table 1, each record scored in its
    reference's language (`benchmark.eval.metrics.descriptor_scores`); a metric that cannot run
    here (SPICE without its jars) is left out. `sed.faithfulness` is an explanation check, added
    by the tracking layer (`benchmark.explain.faithfulness.faithfulness_scores`).

    The numbers are the corpus values of `benchmark.eval.metrics`' scoring functions, the ones
    `compare` and `leaderboard` take their per-utterance scores and table cells from.
    """
    fill_languages(records, card, utterances)
    rows = [PredictionRecord(**r) for r in records]  # read as the scoring functions read records
    scores: dict[str, float] = {}
    wanted = scored_fields(card, system)
    if "emotion" in wanted:
        scores |= emotion_scores(rows, card.labels).corpus
    if "transcript" in wanted:
        scores |= transcript_scores(rows).corpus
    if "descriptor" in wanted:
        scores |= descriptor_scores(rows, card.language).corpus
    return scores
