"""The recipe of the `demo` backbone: a tiny HuBERT whose weights the suite makes itself, offline.

A random tiny HuBERT is a poor stand-in for the paper's CTC-fine-tuned HuBERT-large, so the demo
backbone is made the same way at toy scale: a small HuBERT (50 frames per second, four layers of
128) trained from scratch with CTC on characters on the demo `backbone` pool, which is disjoint
from the evaluation corpus and has no emotion labels. Only the `HubertModel` is saved, as a
downloaded checkpoint would be; the CTC head (`ctc_head.pt`) stays beside it for its own WER.
A mel filterbank init, a high learning rate, no dropout and a log-mel reconstruction term make it
cheap to train and keep prosody (`train_ctc`, `mel_filterbank_init`); it is measured by
`measurements/demo_backbone_probe.py`. The build is deterministic per (seed, size, steps) and cached
atomically under `benchmark_home()/backbones/demo/`; `encoder_weights` resolves (building on first
use) the folder an encoder loads from.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import HubertConfig, HubertForCTC, Wav2Vec2FeatureExtractor
from transformers.audio_utils import mel_filter_bank

from benchmark.config import benchmark_home
from benchmark.data.audio import DEMO_FRONT_END, SAMPLE_RATE, load_audio
from benchmark.data.batching import LengthBucketSampler, pad_waveforms
from benchmark.data.builds import atomic_build, read_build_info
from benchmark.data.demo import BUILD_VERSION as CORPUS_VERSION
from benchmark.data.demo import build_demo_corpus
from benchmark.data.manifest import Utterance, read_manifest
from benchmark.nn.backbones import get_backbone
from benchmark.nn.ctc import BLANK, VOCAB, encode_text, greedy_decode
from benchmark.nn.encoder import prepare_waveforms

BUILD_VERSION = 2  # bump when anything below changes the weights
DEFAULT_SIZE = 1000  # utterances of the backbone pool (about 43 minutes of speech)
DEFAULT_STEPS = 1200  # about 10 epochs of the pool
BATCH_SIZE = 8
PEAK_LR = 3e-3
# Raw waveforms in (saved as `preprocessor_config.json`, which the encoder reads): per-utterance
# normalisation would remove absolute loudness, an emotion cue; `conv_bias=True` in `demo_config`
# lets it survive the front end's per-frame layer norm.
DO_NORMALIZE = False
AUX_LAYER, AUX_WEIGHT = 2, 1.0  # the hidden layer that reconstructs log-mel bands (`train_ctc`)
WARMUP = 0.1  # fraction of steps with a linear warm-up; then cosine decay to zero


def demo_config() -> HubertConfig:
    """A HuBERT of under 1M parameters with a two-layer convolutional front end.

    The standard seven-layer front end (strides 5,2,2,2,2,2,2) spends most of a CPU training step
    at 3200 and 1600 frames per second; here the first layer is a learned filterbank with the
    window and hop of log-mel features (25 ms, 10 ms) and the second pairs its frames, which gives
    the same 320-sample stride, 50 frames per second and frame counts as HuBERT-large at a third
    of the cost, and a window long enough to resolve the harmonics that carry pitch.
    """
    return HubertConfig(
        conv_dim=(128, 128),
        conv_kernel=DEMO_FRONT_END[0],  # shared with the audio checks: the shortest audio it can take
        conv_stride=DEMO_FRONT_END[1],
        num_feat_extract_layers=2,
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=384,
        num_conv_pos_embeddings=32,
        num_conv_pos_embedding_groups=8,
        feat_extract_norm="layer",
        conv_bias=True,
        do_stable_layer_norm=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        final_dropout=0.0,
        layerdrop=0.0,
        mask_time_prob=0.0,
        vocab_size=len(VOCAB),
        pad_token_id=VOCAB.index(BLANK),
        ctc_loss_reduction="mean",
        ctc_zero_infinity=True,
    )


def demo_backbone_dir() -> Path:
    return benchmark_home() / "backbones" / "demo"


def _build_info(size: int, steps: int, seed: int) -> dict[str, object]:
    # The corpus's version too: a backbone trained on an earlier synthesis is not reused.
    return {"version": BUILD_VERSION, "corpus": CORPUS_VERSION, "seed": seed, "size": size, "steps": steps}


def ensure_demo_backbone(
    size: int | None = None, steps: int | None = None, seed: int = 0, progress: bool = True
) -> Path:
    """The folder of the demo backbone (`config.json`, weights), built first if it is not there.

    `size` and `steps` default to `DEFAULT_SIZE` and `DEFAULT_STEPS`, read at call time so that
    tests can shrink the build.
    """
    size, steps = size or DEFAULT_SIZE, steps or DEFAULT_STEPS
    out_dir = demo_backbone_dir()
    info = _build_info(size, steps, seed)
    if (out_dir / "config.json").is_file() and _matches(read_build_info(out_dir), info):
        return out_dir
    manifest = build_demo_corpus(size=size, seed=seed, pool="backbone", progress=progress)
    start = time.monotonic()
    model = train_ctc(manifest, steps, seed, progress)
    info |= {"vocab": list(VOCAB), "train_seconds": round(time.monotonic() - start, 1)}
    with atomic_build(out_dir, info) as tmp:
        model.hubert.save_pretrained(tmp)
        Wav2Vec2FeatureExtractor(do_normalize=DO_NORMALIZE, return_attention_mask=True).save_pretrained(tmp)
        torch.save(model.lm_head.state_dict(), tmp / "ctc_head.pt")
    return out_dir


def encoder_weights(backbone: str, progress: bool = True) -> Path | None:
    """The weights folder `benchmark.nn.encoder.build_encoder` loads for the registry's `backbone`:
    the demo encoder's when the backbone's HuBERT is `demo`, built first if it is not there; None
    for the others (`tiny` and random weights are built, checkpoints found by `benchmark.nn.hub`)."""
    demo = get_backbone(backbone).encoder.get("hubert") == "demo"
    return ensure_demo_backbone(progress=progress) if demo else None


def _matches(found: dict[str, object] | None, wanted: dict[str, object]) -> bool:
    return found is not None and all(found.get(k) == v for k, v in wanted.items())


def mel_filterbank_init(conv: torch.nn.Conv1d) -> None:
    """Start the first conv layer as a short-time Fourier filterbank at mel-spaced frequencies.

    Each group of four channels is a Hann-windowed cosine and sine of one centre frequency and their
    negatives, so after the GELU the next layer can sum them into a band magnitude, as log-mel
    features do. From random weights, most of a few-minute CPU budget went into discovering
    frequency analysis (CTC sat on its blank plateau); from this start it learns characters within
    a few hundred steps. The filters stay trainable.
    """
    bands = conv.out_channels // 4
    low, high = (2595 * math.log10(1 + hz / 700) for hz in (60.0, 7600.0))  # the mel scale
    mels = torch.linspace(low, high, bands)
    freqs = 700 * (10 ** (mels / 2595) - 1)
    t = torch.arange(conv.kernel_size[0]) / SAMPLE_RATE
    window = torch.hann_window(conv.kernel_size[0], periodic=False)
    phase = 2 * math.pi * freqs[:, None] * t[None, :]
    cos, sin = window * torch.cos(phase), window * torch.sin(phase)
    weight = torch.stack([cos, -cos, sin, -sin], dim=1).reshape(-1, 1, conv.kernel_size[0])
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[: len(weight)] = weight / 20


class LogMelTarget(torch.nn.Module):
    """The auxiliary target: 80 log-mel bands (25 ms window, 10 ms hop), two frames stacked per
    encoder frame (160 values at 50 frames per second), from the raw waveform, so loudness included.
    """

    def __init__(self) -> None:
        super().__init__()
        bank = mel_filter_bank(
            num_frequency_bins=201, num_mel_filters=80, min_frequency=0.0, max_frequency=8000.0,
            sampling_rate=SAMPLE_RATE,
        )  # fmt: skip
        self.register_buffer("bank", torch.tensor(bank, dtype=torch.float32).T)
        self.register_buffer("window", torch.hann_window(400))

    def forward(self, waves: torch.Tensor, frames: int) -> torch.Tensor:
        spec = torch.stft(waves, 400, 160, window=self.window, center=False, return_complex=True)
        logmel = torch.log10(self.bank @ spec.abs().pow(2) + 1e-6).transpose(1, 2)
        return logmel[:, : 2 * frames].reshape(len(waves), frames, 160)


def train_ctc(manifest: Path, steps: int, seed: int, progress: bool = True) -> HubertForCTC:
    """Train `HubertForCTC` from scratch on a manifest's transcripts (AdamW, warm-up, cosine decay).

    The loss is CTC on characters plus `AUX_WEIGHT` times the L1 error of a linear map from hidden
    layer `AUX_LAYER` to the frame's log-mel bands. CTC alone makes every layer drop what does not
    spell words (pitch, loudness): an emotion probe fell from 0.65 to 0.51 UA as CTC improved. The
    reconstruction term, a TERA-style acoustic self-supervision target with no labels, keeps those
    cues in a middle layer, where the downstream weighted layer sum can find them, as the middle
    layers of the real HuBERT keep them. The linear map is dropped after training.
    """
    torch.manual_seed(seed)
    rows = read_manifest(manifest)
    waves = [load_audio(row.audio) for row in rows]
    labels = [encode_text(row.transcript or "") for row in rows]
    config = demo_config()
    model = HubertForCTC(config)
    mel_filterbank_init(model.hubert.feature_extractor.conv_layers[0].conv)
    target, aux_head = LogMelTarget(), torch.nn.Linear(config.hidden_size, 160)
    model.train()
    parameters = [*model.parameters(), *aux_head.parameters()]
    optimiser = torch.optim.AdamW(parameters, lr=PEAK_LR, weight_decay=0.01)
    warmup = max(1, int(WARMUP * steps))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, schedule)
    sampler = LengthBucketSampler([len(w) for w in waves], batch_size=BATCH_SIZE, seed=seed)
    bar = tqdm(total=steps, desc="training demo backbone (CTC)", disable=not progress)
    step, epoch = 0, 0
    while step < steps:
        sampler.set_epoch(epoch)
        for batch in sampler:
            if step == steps:
                break
            x, mask = pad_waveforms([waves[i] for i in batch])
            labels_batch = torch.nn.utils.rnn.pad_sequence(
                [torch.tensor(labels[i]) for i in batch], batch_first=True, padding_value=-100
            )
            inputs = prepare_waveforms(x, mask, DO_NORMALIZE)
            out = model(inputs, attention_mask=mask.long(), labels=labels_batch, output_hidden_states=True)
            hidden = out.hidden_states[AUX_LAYER]
            lengths = model._get_feat_extract_output_lengths(mask.sum(dim=1))
            frame_mask = (torch.arange(hidden.shape[1])[None] < lengths[:, None]).to(hidden.dtype)[..., None]
            error = (aux_head(hidden) - target(x, hidden.shape[1])).abs() * frame_mask
            reconstruction = error.sum() / (frame_mask.sum() * error.shape[-1])
            loss = out.loss + AUX_WEIGHT * reconstruction
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimiser.step()
            scheduler.step()
            step += 1
            bar.update()
            bar.set_postfix(ctc=f"{out.loss.item():.3f}", mel=f"{reconstruction.item():.3f}", epoch=epoch)
        epoch += 1
    bar.close()
    return model.eval()


def ctc_wer(folder: Path, utterances: list[Utterance], batch_size: int = 8) -> tuple[float, list[str]]:
    """Greedy-decoding word error rate of a built backbone with its CTC head, and the hypotheses."""
    import jiwer

    model = HubertForCTC.from_pretrained(folder).eval()
    model.lm_head.load_state_dict(torch.load(folder / "ctc_head.pt", weights_only=True))
    hyps = []
    for start in range(0, len(utterances), batch_size):
        chunk = utterances[start : start + batch_size]
        x, mask = pad_waveforms([load_audio(u.audio) for u in chunk])
        with torch.no_grad():
            logits = model(prepare_waveforms(x, mask, DO_NORMALIZE), attention_mask=mask.long()).logits
        lengths = model._get_feat_extract_output_lengths(mask.sum(dim=1)).tolist()
        hyps += [greedy_decode(row, n) for row, n in zip(logits, lengths, strict=True)]
    refs = [" ".join(re.sub(r"[^a-z' ]", " ", (u.transcript or "").lower()).split()) for u in utterances]
    return float(jiwer.wer(refs, hyps)), hyps
