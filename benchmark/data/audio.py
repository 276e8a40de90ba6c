"""Audio I/O: every waveform the suite sees is mono float32 at 16 kHz.

Files are read with `soundfile`; audio tracks of video clips (MELD's mp4) are decoded in-process
with PyAV, which bundles FFmpeg, so no system ffmpeg is needed. Resampling uses `soxr`.
torchaudio is deliberately not used: no torchaudio build imports beside the CPU torch wheel the
suite pins, and its I/O has moved to torchcodec since 2.9.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from benchmark.errors import BenchmarkError

SAMPLE_RATE = 16000


class AudioError(BenchmarkError):
    """An audio file that cannot be used: missing, unreadable, corrupt or empty."""


def resample(wave: np.ndarray, source_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a mono float32 waveform with soxr's high-quality filter."""
    if source_rate == target_rate:
        return wave.astype(np.float32, copy=False)
    return soxr.resample(wave, source_rate, target_rate, quality="HQ").astype(np.float32)


def _to_mono(wave: np.ndarray) -> np.ndarray:
    return wave.mean(axis=1) if wave.ndim == 2 else wave


def load_audio(path: Path | str, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file as mono float32 in [-1, 1] at `target_rate`.

    Raises `AudioError` naming the file for a missing, unreadable, corrupt or empty file.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        wave, rate = decode_media(path)
    else:
        try:
            wave, rate = sf.read(str(path), dtype="float32", always_2d=False)
        except (sf.LibsndfileError, RuntimeError, TypeError) as err:
            raise AudioError(f"{path}: unreadable or corrupt audio ({err})") from err
        wave = _to_mono(np.asarray(wave, dtype=np.float32))
    if wave.size == 0:
        raise AudioError(f"{path}: audio file holds no samples")
    if not np.isfinite(wave).all():
        raise AudioError(f"{path}: audio holds NaN or infinite samples")
    return resample(wave, rate, target_rate)


VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".webm"}


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
    """Write a 16-bit PCM wav, creating parent folders (atomic: temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    sf.write(str(tmp), np.clip(wave, -1.0, 1.0), rate, subtype="PCM_16", format="WAV")
    tmp.replace(path)


def audio_duration(path: Path | str) -> float:
    """Duration in seconds from the file header, without decoding the samples."""
    path = Path(path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"{path}: unreadable or corrupt audio ({err})") from err
    if info.frames == 0:
        raise AudioError(f"{path}: audio file holds no samples")
    return info.frames / info.samplerate
