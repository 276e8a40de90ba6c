"""The prepared GPU check: training speed and memory of the `full` system at paper size.

One GPU, nothing downloaded (`paper-shape`: HuBERT-large and Llama-3.1-8B, random weights): the
suite's own step (`prepare_stage`, `train_step`: `full` on the `full` task, LoRA r=8, bf16) under
the plain engine (as it comes, checkpointing, speed switches) and ZeRO-2/3 (a world of one; as
they come, switches); the plain switched step again on waveforms with HuBERT-large online in it,
for the encoder's share of the step (target: at most 10 %; about 30-60 s more, its compiled
layers cached); ZeRO-2/3 in two processes where 2 GPUs are; HuBERT-large alone. Each row runs in
a fresh process (own peak memory; a failure is reported, the rest run); the table is written to
`gpu_check.json`/`.md` under `--out` after each row. Needs torch, transformers, peft, pydantic,
pyyaml, never mlflow or optuna; runs from a clone; DeepSpeed optional (docs/paper-scale.md, "The
GPU check"). 5-6 minutes on one GPU: `gpu_check.py --out results/`; on CPU, tiny: add `--tiny`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a clone: a GPU machine without network cannot pip install it

REQUIRED = ("torch", "transformers", "peft", "pydantic", "yaml")
# Dense bf16 peak of each GPU, TFLOP/s, by a part of its `torch.cuda.get_device_name()`; the more
# specific name first (an "H100 PCIe" is not an SXM H100).
PEAK_BF16_TFLOPS = {
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "H200": 989.0,
    "H800": 989.0,
    "GH200": 989.0,
    "B200": 2250.0,
    "A100": 312.0,
    "A800": 312.0,
    "L40S": 362.0,
}
# The speed switches of `benchmark.config.DecoderSettings` per row variant.
SWITCHES = {"loss_logits_only": True, "lora_dtype": "bfloat16", "lora_dropout": 0.0, "compile_layers": True}
VARIANTS = {
    "as they come": {},
    "checkpointing": {"gradient_checkpointing": True},
    "speed switches": SWITCHES,
    "speed switches + checkpointing": {**SWITCHES, "gradient_checkpointing": True},
}
# The rows run by default, sized to fit one 5-minute call (`--variants` picks others).
ENGINE_VARIANTS = {
    "plain": ["as they come", "checkpointing", "speed switches"],
    "zero2": ["as they come", "speed switches"],
    "zero3": ["as they come", "speed switches"],
}
# The plain rows repeated with waveforms in the batch and the encoder online inside the step.
ONLINE_VARIANTS = ["speed switches"]
# The ZeRO rows repeated in two processes (one per GPU), and the variant they run.
TWO_PROCESS_ENGINES, TWO_PROCESS_VARIANT = ["zero2", "zero3"], "speed switches"
ONLINE_SHARE_TARGET = 0.10  # the online encoder's share of the step, at most
ZERO2_TARGET, ZERO3_GAP_TARGET = 18_000, 0.15  # tokens/s per GPU; ZeRO-3 at most 15 % below ZeRO-2
RESULT = "gpu_check result: "  # the line of a row's process that holds its JSON
# A SpeechCraft-like response of the `full` task: transcript, descriptor, emotion.
TRANSCRIPT = "so we decided to take the early train and get there before the crowds arrived at the station"
DESCRIPTOR = (
    "A young woman speaks quickly with a high, rising pitch and a loud, bright voice, stressing "
    "the word early and sounding eager and a little breathless."
)
DEEPSPEED_HOWTO = (
    "to bring DeepSpeed along, here: `pip download deepspeed hjson ninja py-cpuinfo msgpack einops "
    "--no-deps -d wheels/` (add `--only-binary=:all: --python-version X.Y` for another Python there), "
    "then `DS_BUILD_OPS=0 pip wheel --no-deps --no-build-isolation -w wheels/ wheels/deepspeed-*.tar.gz` "
    "(a pure-Python wheel; its CUDA ops compile just in time); there: "
    "`pip install --no-index --no-deps wheels/*.whl`"
)


def step_flops(lm_config, batch: int, seq_len: int, loss_positions: int, full_regime: bool) -> float:
    """Model FLOPs of one training step of the LLM on `batch` sequences of `seq_len` positions.

    Forward: 2 FLOPs per weight of the decoder layers per position, causal attention
    (QK^T and AV: 4 x hidden x the positions attended, summed over positions and layers), and the
    output layer at the `loss_positions` per sequence only (what the loss needs). Backward: the
    activation gradients cost one forward more (they reach the speech adapters through every
    layer); weight gradients a third, only when every LLM weight trains (`full` regime), since
    the frozen LLM of LoRA needs none. LoRA, the IB-VAEs and the adapters are under 1 % and left out.
    """
    hidden, layers = lm_config.hidden_size, lm_config.num_hidden_layers
    head_dim = hidden // lm_config.num_attention_heads
    kv = lm_config.num_key_value_heads * head_dim
    layer_weights = hidden * (2 * hidden + 2 * kv) + 3 * hidden * lm_config.intermediate_size
    attended = seq_len * (seq_len + 1) / 2
    per_sequence = (
        2 * layer_weights * layers * seq_len
        + 4 * hidden * attended * layers
        + 2 * hidden * lm_config.vocab_size * loss_positions
    )
    return per_sequence * batch * (3 if full_regime else 2)


def peak_tflops(device_name: str, override: float | None) -> float | None:
    if override:
        return override
    return next((peak for name, peak in PEAK_BF16_TFLOPS.items() if name in device_name), None)


def _device():
    import torch

    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_gib() -> float:
    """GPU: torch's peak allocation; CPU: the process's peak resident memory."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU x{torch.get_num_threads()}"


def samples_for_frames(encoder, frames: int) -> int:
    """The fewest 16 kHz samples the encoder's conv stack turns into `frames` frames (HuBERT: 320
    a frame plus a receptive field of 400), so online and handed-in rows train on the same shape."""
    import torch

    guess = 320 * (frames - 1) + 400
    candidates = torch.arange(max(1, guess - 400), guess + 400)
    matching = candidates[encoder.frame_lengths(candidates) == frames]
    if len(matching) == 0:
        raise RuntimeError(f"no waveform length gives {frames} frames")
    return int(matching[0])


def measure_training(
    engine: str, variant: str, args: argparse.Namespace, online: bool = False
) -> dict | None:
    """One row: build the `full` system, time `args.steps` training steps after `args.warmup`.

    `online`: waveforms in the batch and the frozen encoder (bf16 on a GPU) inside `train_step`,
    as `--features online` trains. Under `torch.distributed.run` every rank trains the same batch
    and rank 0 returns the row, summed over ranks (None on the others)."""
    import torch

    from benchmark.data.examples import Example, target_for
    from benchmark.errors import BenchmarkError
    from benchmark.nn.decoder import causal_lm
    from benchmark.nn.encoder import build_encoder
    from benchmark.nn.system import build_system
    from benchmark.ranks import all_gathered
    from benchmark.registry import load_system
    from benchmark.train.data import collate
    from benchmark.train.engine import init_distributed, training_device
    from benchmark.train.loop import prepare_stage, train_step

    if torch.cuda.is_available():  # this rank's GPU before its process group (NCCL), syncs and peaks
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    try:
        rank, local_rank, world = init_distributed(engine)  # DeepSpeed's process group; nothing for plain
    except BenchmarkError as err:  # DeepSpeed cannot be imported
        return {"skipped": str(err)}
    device = training_device(local_rank)
    backbone = "tiny" if args.tiny else "paper-shape"
    stage = {"name": "full", "train": ["content", "descriptor", "llm"], "tasks": ["full"], "lr": 2e-5,
             "scheduler": "constant", "warmup_ratio": 0.0, "epochs": 1}  # fmt: skip
    decoder = {**VARIANTS[variant], "regime": "lora"}
    if engine != "plain":  # DeepSpeed's bf16 mode makes every weight bf16 itself, with fp32 masters
        decoder.pop("lora_dtype", None)
    if args.no_compile:
        decoder["compile_layers"] = False
    system = load_system(
        "full", {"decoder": decoder, "training": {"batch_size": args.batch_size}, "stages": [stage]}
    )
    # The encoder's shape, without its weights; online, the encoder as a run holds it (features.py).
    with device if online else torch.device("meta"):
        encoder = build_encoder(backbone)
    if online and device.type == "cuda":
        encoder.to(torch.bfloat16)
    layers, width = encoder.num_layers, encoder.hidden_size
    torch.manual_seed(0)
    with device:  # random weights are initialised where they train
        model = build_system(system, layers, width, backbone=backbone)

    # Frames per utterance so that the spliced sequence has `seq_len` positions.
    tokenizer, prompt = model.decoder.tokenizer, model.decoder.prompt
    example = Example("u", torch.zeros(1, 1, 1), TRANSCRIPT, DESCRIPTOR, "happy")
    response = len(tokenizer(target_for(example, "full"), add_special_tokens=False)["input_ids"]) + 1
    fixed = len(prompt.before_content) + len(prompt.between) + len(prompt.after_descriptor) + response
    speech_tokens = max(1, (args.seq_len - fixed) // 2)  # per slot: content and descriptor
    frames = speech_tokens * system.adapter.stack
    if online:  # a loader, as the online source gives: the example knows its frames before loading
        wave = torch.randn(samples_for_frames(encoder, frames))
        inputs = {"features": lambda: wave, "num_frames": frames}
    else:
        inputs = {"features": torch.randn(layers, frames, width)}
    examples = [Example(f"u{i}", **inputs, transcript=TRANSCRIPT, descriptor=DESCRIPTOR, emotion="happy")
                for i in range(args.batch_size)]  # fmt: skip

    start = time.perf_counter()
    batch = collate(examples, "full").to(device)
    _sync()
    input_s = time.perf_counter() - start
    frozen = encoder if online else None
    hidden, _ = batch.inputs.encoded(frozen)
    if hidden.shape != (layers, args.batch_size, frames, width):
        raise RuntimeError(f"the step would see hidden states {tuple(hidden.shape)}, not {frames} frames")
    del hidden
    runner = prepare_stage(model, system.stages[0], system.training, engine, device, args.warmup + args.steps)
    model.train()
    losses = []
    for _ in range(args.warmup):
        out, _ = train_step(runner, batch, False, True, frozen)
        losses.append(float(out.loss))
    _sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        out, _ = train_step(runner, batch, False, True, frozen)
        losses.append(float(out.loss))
    _sync()
    step_s = (time.perf_counter() - start) / args.steps
    encoder_s = None
    if online:  # the encoder alone on the same batch: a cross-check of the two rows' difference
        start = time.perf_counter()
        for _ in range(args.steps):
            batch.inputs.encoded(encoder)
        _sync()
        encoder_s = (time.perf_counter() - start) / args.steps
    ranks = all_gathered({"step_s": step_s, "peak_gib": _peak_gib()})
    if rank != 0:
        return None
    step_s = max(r["step_s"] for r in ranks)  # the ranks wait for each other every step
    seq_len = fixed + 2 * speech_tokens
    lm_config = causal_lm(model.decoder.lm).config
    flops = world * step_flops(lm_config, args.batch_size, seq_len, response, system.decoder.regime == "full")
    peak = peak_tflops(_device_name(), args.peak_tflops)
    settings = system.decoder.model_dump()
    return {
        "engine": engine,
        "variant": variant,
        "features": "online" if online else "handed in",
        "processes": world,
        "switches": {name: settings[name] for name in [*SWITCHES, "gradient_checkpointing"]},
        "backbone": backbone,
        "device": _device_name() if world == 1 else f"{world} x {_device_name()}",
        "batch": args.batch_size,
        "seq_len": seq_len,
        "frames": frames,
        "loss_positions": response,
        "step_s": step_s,
        # Summed over the ranks, each of which trains its own batch of `batch` sequences.
        "tokens_per_s": world * args.batch_size * seq_len / step_s,
        "response_tokens_per_s": world * args.batch_size * response / step_s,
        "utterances_per_s": world * args.batch_size / step_s,
        "tflops": flops / step_s / 1e12,
        "mfu": flops / step_s / (world * peak * 1e12) if peak else None,
        "peak_gib": max(r["peak_gib"] for r in ranks),
        "peak_gib_per_rank": [r["peak_gib"] for r in ranks],
        "input_s_per_batch": input_s,
        "encoder_s_per_batch": encoder_s,
        "encoder_dtype": str(encoder.model.dtype).removeprefix("torch.") if online else None,
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }


def measure_encoder(args: argparse.Namespace) -> list[dict]:
    """HuBERT-large (random weights) encoding batches of 8 and 16 clips, in float32 and bf16."""
    import torch

    from benchmark.nn.encoder import build_encoder

    device = _device()
    with device:
        encoder = build_encoder("tiny" if args.tiny else "paper-shape")
    samples = int(args.clip_seconds * 16000)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        encoder.model.to(dtype)
        for batch in (8, 16):
            waves, mask = torch.randn(batch, samples), torch.ones(batch, samples, dtype=torch.bool)
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            for _ in range(args.warmup):
                encoder(waves, mask)
            _sync()
            start = time.perf_counter()
            for _ in range(args.steps):
                encoder(waves, mask)
            _sync()
            seconds = (time.perf_counter() - start) / args.steps
            audio_per_s = batch * args.clip_seconds / seconds
            rows.append(
                {
                    "dtype": str(dtype).removeprefix("torch."),
                    "batch": batch,
                    "clip_seconds": args.clip_seconds,
                    "device": _device_name(),
                    "batch_s": seconds,
                    "clips_per_s": batch / seconds,
                    "audio_s_per_s": audio_per_s,
                    "gpu_hours_per_740h": 740 / audio_per_s,  # SpeechCraft's GigaSpeech-m part, once
                    "peak_gib": _peak_gib(),
                }
            )
    return rows


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def online_share(online: dict, handed_in: dict | None) -> dict:
    """The online encoder's cost as a share of the online step, from the two rows' step times (the
    encoder timed alone on the batch as a cross-check); empty when either row has no time."""
    if "step_s" not in online or not handed_in or "step_s" not in handed_in:
        return {}
    share = (online["step_s"] - handed_in["step_s"]) / online["step_s"]
    return {
        "handed_in_step_s": handed_in["step_s"],
        "encoder_share": share,
        "encoder_alone_share": online["encoder_s_per_batch"] / online["step_s"],
        "meets_target": share <= ONLINE_SHARE_TARGET,
    }


def target_lines(rows: list[dict]) -> list[str]:
    """The targets, measured: the online encoder at most 10 % of the step; ZeRO-2 at least 18k
    tokens/s per GPU and ZeRO-3 within 15 % of it (fastest variant, one and two processes)."""
    lines = []
    for row in rows:
        if row.get("features") != "online" or "step_s" not in row:
            continue
        label = f"{row['engine']}, {row['variant']}"
        if "encoder_share" not in row:
            lines.append(f"Online encoder ({label}): no handed-in row to compare with.")
            continue
        lines.append(
            f"Online encoder ({label}): {100 * row['encoder_share']:.1f} % of the step "
            f"({row['step_s']:.3f} s against {row['handed_in_step_s']:.3f} s with the features handed in; "
            f"the encoder alone {row['encoder_s_per_batch']:.3f} s a batch, "
            f"{100 * row['encoder_alone_share']:.1f} %): "
            f"{'meets' if row['meets_target'] else 'misses'} the {100 * ONLINE_SHARE_TARGET:.0f} % target."
        )
    for processes in sorted({row.get("processes", 1) for row in rows}):
        best: dict[str, float] = {}
        for row in rows:
            if row.get("processes", 1) == processes and row["engine"] != "plain" and "tokens_per_s" in row:
                best[row["engine"]] = max(best.get(row["engine"], 0.0), row["tokens_per_s"] / processes)
        where = "one process" if processes == 1 else f"{processes} processes, per GPU"
        if "zero2" in best:
            verdict = "meets" if best["zero2"] >= ZERO2_TARGET else "misses"
            lines.append(f"ZeRO-2 ({where}): {best['zero2']:,.0f} tokens/s: {verdict} the target of "
                         f"{ZERO2_TARGET:,}.")  # fmt: skip
        if "zero2" in best and "zero3" in best:
            gap = 1 - best["zero3"] / best["zero2"]
            verdict = "within" if gap <= ZERO3_GAP_TARGET else "outside"
            lines.append(f"ZeRO-3 ({where}): {best['zero3']:,.0f} tokens/s, {100 * gap:.1f} % below ZeRO-2: "
                         f"{verdict} the {100 * ZERO3_GAP_TARGET:.0f} % target.")  # fmt: skip
    return lines


def markdown(result: dict) -> str:
    """The JSON result as two markdown tables (training rows, encoder rows), the targets and notes."""
    lines = [
        f"Device: {result['device']}; backbone {result['backbone']}; batch {result['batch_size']}.",
        "",
        "| engine | variant | tokens/s | response tokens/s | utterances/s | TFLOP/s | MFU | "
        "peak GiB | step s | input s/batch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["training"]:
        engine, variant = row["engine"], row["variant"]
        if row.get("processes", 1) > 1:
            engine += f", {row['processes']} processes"
        if row.get("features") == "online":
            variant += ", online encoder"
        if "status" in row:
            lines.append(f"| {engine} | {variant} | {row['status']} " + "| " * 7 + "|")
            continue
        mfu = "–" if row["mfu"] is None else f"{100 * row['mfu']:.1f} %"
        peaks = " / ".join(_num(peak) for peak in row.get("peak_gib_per_rank") or [row["peak_gib"]])
        lines.append(
            f"| {engine} | {variant} | {_num(row['tokens_per_s'], 0)} "
            f"| {_num(row['response_tokens_per_s'], 0)} | {_num(row['utterances_per_s'], 2)} "
            f"| {_num(row['tflops'])} | {mfu} | {peaks} | {row['step_s']:.3f} "
            f"| {row['input_s_per_batch']:.3f} |"
        )
    if any(row.get("processes", 1) > 1 and "step_s" in row for row in result["training"]):
        lines += ["", "Rows of several processes: tokens/s, utterances/s and TFLOP/s summed over the ranks "
                  "(each trains a batch of its own); peak GiB per rank."]  # fmt: skip
    if targets := target_lines(result["training"]):
        tiny = result["backbone"] == "tiny"
        note = " (set for paper-shape on GPUs; tiny numbers only exercise the code)" if tiny else ""
        lines += ["", f"Targets{note}:", "", *(f"- {line}" for line in targets)]
    lines += ["", "| encoder dtype | clips per batch | clip s | clips/s | audio s per s "
              "| device h per 740 h | peak GiB |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in result["encoder"]:
        lines.append(
            f"| {row['dtype']} | {row['batch']} | {row['clip_seconds']:g} | {_num(row['clips_per_s'])} "
            f"| {_num(row['audio_s_per_s'], 0)} | {_num(row['gpu_hours_per_740h'], 2)} "
            f"| {_num(row['peak_gib'])} |"
        )
    lines += ["", *(f"- {note}" for note in result["notes"])]
    return "\n".join(lines) + "\n"


def two_process_skip(processes: int, tiny: bool, gpus: int) -> str | None:
    """Why a row of several processes cannot run here, or None: one GPU each, or with `--tiny` and
    no GPU at all, DeepSpeed's CPU accelerator over gloo (what CI can run)."""
    if gpus >= processes or (tiny and gpus == 0):
        return None
    return f"skipped: needs {processes} GPUs, found {gpus}"


def _child(args: argparse.Namespace, *task: str, processes: int = 1) -> dict | list | None:
    """Run this script on one task in a fresh process, or `processes` of them under
    `torch.distributed.run`; the result is the JSON of the line starting with `RESULT`."""
    options = ["--steps", args.steps, "--warmup", args.warmup, "--batch-size", args.batch_size,
               "--seq-len", args.seq_len, "--clip-seconds", args.clip_seconds, "--out", args.out]  # fmt: skip
    options += ["--peak-tflops", args.peak_tflops] if args.peak_tflops else []
    options += ["--tiny"] if args.tiny else []
    options += ["--no-compile"] if args.no_compile else []
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    command = [*launcher, __file__, *map(str, options), "--only", *task]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=args.row_timeout)
    except subprocess.TimeoutExpired:
        return {"status": f"failed: over {args.row_timeout} s"}
    found = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    if proc.returncode != 0 or not found:
        errors = proc.stderr.strip().splitlines() or ["no output"]
        # A rank's own error, rather than the launcher's ChildFailedError that follows it.
        ranks = [line for line in errors if "Error" in line and "ChildFailedError" not in line]
        error = (ranks or errors)[-1].strip()
        return {"status": f"failed: {error[:200]}"}
    return json.loads(found[-1].removeprefix(RESULT))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, type=Path, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--tiny", action="store_true", help="the tiny backbone on CPU (CI), same code path")
    parser.add_argument("--engines", nargs="*", default=list(ENGINE_VARIANTS), choices=list(ENGINE_VARIANTS))
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), help="for every engine (default: ENGINE_VARIANTS)"
    )
    parser.add_argument(
        "--online", nargs="*", default=ONLINE_VARIANTS, choices=list(VARIANTS),
        help="plain variants repeated with the encoder online (default: speed switches; none: no value)",
    )  # fmt: skip
    parser.add_argument(
        "--two-process", nargs="*", default=TWO_PROCESS_ENGINES, choices=TWO_PROCESS_ENGINES,
        help=f"engines repeated in two processes, {TWO_PROCESS_VARIANT} (2 GPUs, or --tiny on CPU)",
    )  # fmt: skip
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out of the switches")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 8 (tiny: 2)")
    parser.add_argument(
        "--seq-len", type=int, default=None, help="LLM positions per utterance (384; tiny 160)"
    )
    parser.add_argument("--clip-seconds", type=float, default=None, help="encoder clips (10 s; tiny 1 s)")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, for MFU")
    parser.add_argument("--row-timeout", type=int, default=240, help="seconds per row before it is failed")
    parser.add_argument("--only", nargs="+", help=argparse.SUPPRESS)  # internal: one row in this process
    args = parser.parse_args()
    args.batch_size = args.batch_size or (2 if args.tiny else 8)
    args.seq_len = args.seq_len or (160 if args.tiny else 384)
    args.clip_seconds = args.clip_seconds or (1.0 if args.tiny else 10.0)
    if missing := [name for name in REQUIRED if importlib.util.find_spec(name) is None]:
        sys.exit(
            f"missing {', '.join(missing)}: here `pip download {' '.join(missing)} -d wheels/` (for the "
            "GPU machine's Python: --python-version, --platform), there `pip install --no-index wheels/*`"
        )
    if args.only:
        import torch

        kind, *rest = args.only
        if kind == "encoder":
            print(RESULT + json.dumps(measure_encoder(args)), flush=True)
            return
        row = measure_training(kind, rest[0], args, online="online" in rest[1:])
        if row is not None:  # rank 0 (or the only process)
            print(RESULT + json.dumps(row), flush=True)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        return

    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    notes = []
    if torch.cuda.is_available() and not args.tiny and peak_tflops(_device_name(), args.peak_tflops) is None:
        notes.append(f"no bf16 peak known for {_device_name()}: pass --peak-tflops for MFU")
    result = {"device": _device_name(), "backbone": "tiny" if args.tiny else "paper-shape",
              "batch_size": args.batch_size, "training": [], "encoder": [], "notes": notes}  # fmt: skip

    def save() -> None:
        (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        (args.out / "gpu_check.md").write_text(markdown(result), encoding="utf-8")

    plan = []  # (engine, variant, online, processes), each online row right after its handed-in one
    for engine in args.engines:
        for variant in args.variants or ENGINE_VARIANTS[engine]:
            plan.append((engine, variant, False, 1))
            if engine == "plain" and variant in args.online:
                plan.append((engine, variant, True, 1))
    plan += [(engine, TWO_PROCESS_VARIANT, False, 2) for engine in args.two_process]
    deepspeed_missing = None
    for engine, variant, online, processes in plan:
        if engine != "plain" and deepspeed_missing:
            row = {"status": "skipped: no deepspeed"}
        elif processes > 1 and (why := two_process_skip(processes, args.tiny, torch.cuda.device_count())):
            row = {"status": why}
        else:
            row = _child(args, engine, variant, *(["online"] if online else []), processes=processes)
        if "skipped" in row:
            deepspeed_missing = row["skipped"]
            line = f"ZeRO rows skipped: {deepspeed_missing}; {DEEPSPEED_HOWTO}"
            print(line, flush=True)
            notes.append(line)
            row = {"status": "skipped: no deepspeed"}
        features = "online" if online else "handed in"
        row = {"engine": engine, "variant": variant, "features": features, "processes": processes, **row}
        if online:
            same = (engine, variant, "handed in", 1)
            keys = [(r["engine"], r["variant"], r["features"], r["processes"]) for r in result["training"]]
            handed_in = result["training"][keys.index(same)] if same in keys else None
            row.update(online_share(row, handed_in))
        result["training"].append(row)
        print(json.dumps(row), flush=True)
        save()
    encoder = _child(args, "encoder")
    if isinstance(encoder, dict):  # a failure
        notes.append(f"encoder timing {encoder['status']}")
    else:
        result["encoder"] = encoder
    save()
    print(markdown(result))


if __name__ == "__main__":
    main()
