"""Audio I/O: every waveform the suite sees is mono float32 at 16 kHz.

Files are read with `soundfile`; what libsndfile does not know (MELD's mp4 clips, m4a, aac, ...)
is decoded in-process with PyAV, which bundles FFmpeg, so no system ffmpeg is needed. Resampling uses `soxr`.
torchaudio is deliberately not used: no torchaudio build imports beside the CPU torch wheel the
suite pins, and its I/O has moved to torchcodec since 2.9.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from benchmark.data.builds import atomic_file
from benchmark.errors import BenchmarkError

SAMPLE_RATE = 16000
# The convolutional front ends of the suite's encoders: (kernel sizes, strides), layer by layer.
SSL_FRONT_END = ((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2))  # HuBERT, wav2vec 2.0, WavLM
DEMO_FRONT_END = ((400, 2), (160, 2))  # the demo backbone (benchmark.train.demo_backbone)
# Peak amplitude below which a file counts as silent: -80 dBFS, about three steps of 16-bit PCM.
# Speech, even quiet and far from the microphone, peaks tens of dB higher; below this is digital
# silence or dither, from which no encoder can recover anything.
SILENCE_PEAK = 1e-4


class AudioError(BenchmarkError):
    """An audio file that cannot be used: missing, unreadable, corrupt, empty, too short, silent
    or holding NaN/infinite samples."""


def receptive_field(kernels: tuple[int, ...], strides: tuple[int, ...]) -> int:
    """Input samples that one output frame of a stack of unpadded 1-D convolutions sees.

    It is also the shortest input that gives any frame at all (a layer of kernel k turns fewer than
    k inputs into nothing): 1 + sum over layers l of (k_l - 1) * (product of the strides below l).
    Shorter audio makes torch's conv1d fail deep inside the encoder, so it is refused when read.
    """
    field, hop = 1, 1
    for kernel, stride in zip(kernels, strides, strict=True):
        field += (kernel - 1) * hop
        hop *= stride
    return field


# The shortest usable audio at 16 kHz: 400 samples (25 ms) for the SSL encoders' front end, 560
# (35 ms) for the demo backbone's. The longer one is required, so that a manifest that one
# backbone accepts every backbone accepts.
MIN_SAMPLES = max(receptive_field(*SSL_FRONT_END), receptive_field(*DEMO_FRONT_END))


def resample(wave: np.ndarray, source_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a mono float32 waveform with soxr's high-quality filter."""
    if source_rate == target_rate:
        return wave.astype(np.float32, copy=False)
    return soxr.resample(wave, source_rate, target_rate, quality="HQ").astype(np.float32)


def _to_mono(wave: np.ndarray) -> np.ndarray:
    return wave.mean(axis=1) if wave.ndim == 2 else wave


def load_audio(path: Path | str, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file as mono float32 in [-1, 1] at `target_rate`.

    libsndfile (`soundfile`) reads what it knows (wav, flac, ogg, mp3, aiff, ...); everything else,
    and a file libsndfile cannot open, goes to FFmpeg through PyAV (m4a, aac, opus, wma, the audio
    of mp4/mkv/webm clips). Channels are averaged. Raises `AudioError` naming the file for a
    missing file, one neither decodes (not audio, or corrupt), an empty one, NaN or infinite
    samples, and audio shorter than the encoders' receptive field (`MIN_SAMPLES` at 16 kHz).
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    if path.suffix.lower() in MEDIA_SUFFIXES:
        wave, rate = decode_media(path)
    else:
        try:
            wave, rate = sf.read(str(path), dtype="float32", always_2d=False)
            wave = _to_mono(np.asarray(wave, dtype=np.float32))
        except (sf.LibsndfileError, RuntimeError, TypeError) as err:
            try:  # a format libsndfile lacks, under any name: FFmpeg may know it
                wave, rate = decode_media(path)
            except AudioError:
                raise AudioError(f"{path}: unreadable or corrupt audio, or not audio at all ({err})") from err
    if wave.size == 0:
        raise AudioError(f"{path}: audio file holds no samples")
    if not np.isfinite(wave).all():
        raise AudioError(f"{path}: audio holds NaN or infinite samples")
    wave = resample(wave, rate, target_rate)
    if len(wave) * SAMPLE_RATE < MIN_SAMPLES * target_rate:
        raise AudioError(
            f"{path}: audio too short ({1000 * len(wave) / target_rate:.1f} ms; the encoder needs at least "
            f"{1000 * MIN_SAMPLES / SAMPLE_RATE:g} ms, {MIN_SAMPLES} samples at 16 kHz)"
        )
    return wave


def require_sound(wave: np.ndarray, path: Path | str) -> None:
    """Refuse silence: a peak below `SILENCE_PEAK` (digital silence or dither) carries nothing."""
    peak = float(np.abs(wave).max())
    if peak < SILENCE_PEAK:
        raise AudioError(f"{path}: silent audio (peak amplitude {peak:.2g}, below {SILENCE_PEAK:g})")


# Containers and codecs decoded with PyAV (FFmpeg) rather than libsndfile.
MEDIA_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4a", ".aac", ".wma", ".amr", ".3gp"}
# What a folder is searched for (`benchmark predict FOLDER`): libsndfile's formats and the above.
SOUNDFILE_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".w64"}
AUDIO_SUFFIXES = SOUNDFILE_SUFFIXES | MEDIA_SUFFIXES


def decode_media(path: Path) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of a media file (e.g. an mp4 clip) with PyAV.

    Returns (mono float32 waveform, sample rate).
    """
    import av  # imported here: only corpora with video clips need it

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(f"{path}: media file has no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=stream.rate or SAMPLE_RATE)
            chunks = []
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
            rate = resampler.rate
    except av.error.FFmpegError as err:
        raise AudioError(f"{path}: unreadable or corrupt media ({err})") from err
    wave = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    return wave, int(rate)


def write_wav(path: Path, wave: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Write a 16-bit PCM wav, creating parent folders (atomic; not fsynced, like a cache entry:
    a synthesised or decoded clip lost to a crash is made again)."""
    with atomic_file(path, "wb", durable=False) as handle:
        sf.write(handle, np.clip(wave, -1.0, 1.0), rate, subtype="PCM_16", format="WAV")


def probe_audio(path: Path | str) -> float:
    """Check that an audio file is usable by every encoder; returns its duration in seconds.

    Corpus readers call this for every row, so that a file `run` could not use becomes an issue
    at its row (fatal with `--strict`) instead of a crash inside the encoder much later. The file
    is decoded as `run` will decode it (`load_audio`: missing, corrupt, empty, NaN/inf, too short),
    because a header shows neither non-finite nor silent samples, and silence (a peak below
    `SILENCE_PEAK`) is refused as well. This reads the whole corpus once.
    """
    wave = load_audio(path)
    require_sound(wave, path)
    return len(wave) / SAMPLE_RATE
