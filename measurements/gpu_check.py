"""The prepared GPU check: training speed and memory of the `full` system at paper size.

On one GPU, with nothing downloaded (`--backbone paper-shape`: HuBERT-large and
Llama-3.1-8B-Instruct with random weights), it measures the suite's own training step
(`benchmark.train.loop.prepare_stage` and `train_step`: every module group of `full` training on
the `full` task, LoRA r=8 on q/k/v/o, bf16 autocast) under the plain engine and DeepSpeed ZeRO-2
and ZeRO-3 (a world of one), each as the config comes and with the speed switches of
`DecoderSettings`, then times HuBERT-large encoding batches of 8 and 16 clips. Per row it prints
sequence tokens/s (positions through the LLM, as the README's planning anchors count them),
response tokens/s, utterances/s, model FLOPs utilisation and peak memory, and writes the table
as `gpu_check.json` and `gpu_check.md` under `--out` after every row (a timeout keeps what was done).

    python measurements/gpu_check.py --out results/            # a GPU; about 5 minutes
    python measurements/gpu_check.py --tiny --out /tmp/check   # the same end to end on CPU, tiny

Every row runs in a fresh process, so each peak memory is its own and a failing row (out of
memory, a compiler error) is reported and the rest still run. Model FLOPs count the work the
step needs (`step_flops`), not what gradient checkpointing recomputes. A GPU missing from
`PEAK_BF16_TFLOPS` needs `--peak-tflops` for MFU.

The check needs torch, transformers, peft, pydantic and pyyaml; never mlflow or optuna. It runs
from a clone without installing the suite. DeepSpeed is optional (its rows are skipped, with the
way to bring it along, when it cannot be imported).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
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


def measure_training(engine: str, variant: str, args: argparse.Namespace) -> dict:
    """One row: build the `full` system, time `args.steps` training steps after `args.warmup`."""
    import torch

    from benchmark.data.examples import Example, target_for
    from benchmark.errors import BenchmarkError
    from benchmark.nn.decoder import causal_lm
    from benchmark.nn.encoder import build_encoder
    from benchmark.nn.system import build_system
    from benchmark.registry import load_system
    from benchmark.train.data import collate
    from benchmark.train.engine import init_distributed
    from benchmark.train.loop import prepare_stage, train_step

    try:
        init_distributed(engine)  # DeepSpeed's process group (a world of one); nothing for plain
    except BenchmarkError as err:  # DeepSpeed cannot be imported
        return {"skipped": str(err)}
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
    device = _device()
    with torch.device("meta"):  # the encoder's shape, without building its weights
        encoder = build_encoder(backbone)
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
    hidden = torch.randn(layers, frames, width)
    examples = [Example(f"u{i}", hidden, TRANSCRIPT, DESCRIPTOR, "happy") for i in range(args.batch_size)]

    start = time.perf_counter()
    batch = collate(examples, "full").to(device)
    _sync()
    input_s = time.perf_counter() - start
    runner = prepare_stage(model, system.stages[0], system.training, engine, device, args.warmup + args.steps)
    model.train()
    losses = []
    for _ in range(args.warmup):
        out, _ = train_step(runner, batch, False, True)
        losses.append(float(out.loss))
    _sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        out, _ = train_step(runner, batch, False, True)
        losses.append(float(out.loss))
    _sync()
    step_s = (time.perf_counter() - start) / args.steps
    seq_len = fixed + 2 * speech_tokens
    lm_config = causal_lm(model.decoder.lm).config
    flops = step_flops(lm_config, args.batch_size, seq_len, response, system.decoder.regime == "full")
    peak = peak_tflops(_device_name(), args.peak_tflops)
    settings = system.decoder.model_dump()
    return {
        "engine": engine,
        "variant": variant,
        "switches": {name: settings[name] for name in [*SWITCHES, "gradient_checkpointing"]},
        "backbone": backbone,
        "device": _device_name(),
        "batch": args.batch_size,
        "seq_len": seq_len,
        "loss_positions": response,
        "step_s": step_s,
        "tokens_per_s": args.batch_size * seq_len / step_s,
        "response_tokens_per_s": args.batch_size * response / step_s,
        "utterances_per_s": args.batch_size / step_s,
        "tflops": flops / step_s / 1e12,
        "mfu": flops / step_s / (peak * 1e12) if peak else None,
        "peak_gib": _peak_gib(),
        "input_s_per_batch": input_s,
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


def markdown(result: dict) -> str:
    """The JSON result as two markdown tables (training rows, encoder rows) and its notes."""
    lines = [
        f"Device: {result['device']}; backbone {result['backbone']}; batch {result['batch_size']}.",
        "",
        "| engine | variant | tokens/s | response tokens/s | utterances/s | TFLOP/s | MFU | "
        "peak GiB | step s | input s/batch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["training"]:
        if "status" in row:
            lines.append(f"| {row['engine']} | {row['variant']} | {row['status']} " + "| " * 7 + "|")
            continue
        mfu = "–" if row["mfu"] is None else f"{100 * row['mfu']:.1f} %"
        lines.append(
            f"| {row['engine']} | {row['variant']} | {_num(row['tokens_per_s'], 0)} "
            f"| {_num(row['response_tokens_per_s'], 0)} | {_num(row['utterances_per_s'], 2)} "
            f"| {_num(row['tflops'])} | {mfu} | {_num(row['peak_gib'])} | {row['step_s']:.3f} "
            f"| {row['input_s_per_batch']:.3f} |"
        )
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


def _child(args: argparse.Namespace, *task: str) -> dict | list | None:
    """Run this script on one task in a fresh process; its last output line is the JSON result."""
    options = ["--steps", args.steps, "--warmup", args.warmup, "--batch-size", args.batch_size,
               "--seq-len", args.seq_len, "--clip-seconds", args.clip_seconds, "--out", args.out]  # fmt: skip
    options += ["--peak-tflops", args.peak_tflops] if args.peak_tflops else []
    options += ["--tiny"] if args.tiny else []
    options += ["--no-compile"] if args.no_compile else []
    command = [sys.executable, __file__, *map(str, options), "--only", *task]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=args.row_timeout)
    except subprocess.TimeoutExpired:
        return {"status": f"failed: over {args.row_timeout} s"}
    if proc.returncode != 0:
        error = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": f"failed: {error[:200]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, type=Path, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--tiny", action="store_true", help="the tiny backbone on CPU (CI), same code path")
    parser.add_argument("--engines", nargs="+", default=list(ENGINE_VARIANTS), choices=list(ENGINE_VARIANTS))
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), help="for every engine (default: ENGINE_VARIANTS)"
    )
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
        kind, *rest = args.only
        print(
            json.dumps(measure_encoder(args) if kind == "encoder" else measure_training(kind, rest[0], args))
        )
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

    deepspeed_missing = None
    for engine in args.engines:
        for variant in args.variants or ENGINE_VARIANTS[engine]:
            if engine != "plain" and deepspeed_missing:
                row = {"status": "skipped: no deepspeed"}
            else:
                row = _child(args, engine, variant)
            if "skipped" in row:
                deepspeed_missing = row["skipped"]
                line = f"ZeRO rows skipped: {deepspeed_missing}; {DEEPSPEED_HOWTO}"
                print(line, flush=True)
                notes.append(line)
                row = {"status": "skipped: no deepspeed"}
            row = {"engine": engine, "variant": variant, **row}
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
