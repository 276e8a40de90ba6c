"""eSpeak NG speech synthesis through ctypes, for the offline demo corpora.

`espeakng-loader` ships the shared library and its voice data, so no system package is needed.
The library is a process-wide state machine (one voice, one set of parameters, one callback), so
every synthesis runs under a lock, one after another, and the library is reloaded before each
utterance so that the same request always gives the same samples (see `_Engine`). Audio comes back
at the library's own rate (22050 Hz); callers resample to 16 kHz with
`benchmark.data.audio.resample`.
"""

from __future__ import annotations

import _ctypes
import ctypes
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.errors import BenchmarkError

# Constants of espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_AUTO = 1
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
_EE_OK = 0

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


@dataclass(frozen=True)
class Prosody:
    """eSpeak NG's global prosody parameters (the ranges its API accepts).

    `pitch` and `range` are relative to the voice: 50 is the voice's own base pitch and intonation
    range, 0 and 100 the extremes; `volume` scales the amplitude linearly (100 = normal).
    """

    rate: int = 175  # words per minute, 80-450
    volume: int = 100  # amplitude, 0-200
    pitch: int = 50  # base pitch, 0-100
    range: int = 50  # intonation range, 0-100

    def clipped(self) -> Prosody:
        """The same prosody with every value inside the range the library accepts."""
        return Prosody(
            rate=int(np.clip(self.rate, 80, 450)),
            volume=int(np.clip(self.volume, 0, 200)),
            pitch=int(np.clip(self.pitch, 0, 100)),
            range=int(np.clip(self.range, 0, 100)),
        )


class _Engine:
    """The eSpeak NG library, reloaded fresh for every utterance, and the callback collecting samples.

    The library keeps synthesis state in static variables that no API call resets (the pitch
    flutter phase, the automatic gain control, libc's `rand()` behind breathy voices), so the
    same request gives slightly different audio depending on what was synthesised before. To make
    every utterance depend on its own request only, the library is unloaded (`dlclose`) and loaded
    again before each one; `srand` and eSpeak's own seed are reset too.
    This only works while nothing else in the process holds the same library open.
    """

    def __init__(self) -> None:
        try:
            import espeakng_loader

            self.library_path = str(espeakng_loader.get_library_path())
            self.data_path = Path(espeakng_loader.get_data_path())
            self.lib = ctypes.CDLL(self.library_path)
        except (ImportError, OSError) as err:
            raise BenchmarkError(
                f"cannot load the eSpeak NG library ({err})",
                hint="install the `espeakng-loader` package (`pip install espeakng-loader`)",
            ) from err
        self.libc = ctypes.CDLL(None)
        self.chunks: list[np.ndarray] = []
        # Kept as an attribute: if the ctypes callback object were garbage-collected, the library
        # would call freed memory.
        self.callback = _SynthCallback(self._collect)
        self.rate = self._initialise()

    def _initialise(self) -> int:
        lib = self.lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_path).encode(), 0)
        if rate <= 0:
            raise BenchmarkError(f"eSpeak NG failed to initialise with its data at {self.data_path}")
        lib.espeak_SetSynthCallback(self.callback)
        return rate

    def _reload(self) -> None:
        """Unload the library and load it again, so that its static state starts afresh."""
        self.lib.espeak_Terminate()
        _ctypes.dlclose(self.lib._handle)
        self.lib = ctypes.CDLL(self.library_path)
        self._initialise()

    def _collect(self, wav: ctypes.POINTER(ctypes.c_short), count: int, events: int) -> int:
        if wav and count > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0  # 0 = go on synthesising

    def synthesise(self, text: str, voice: str, prosody: Prosody) -> np.ndarray:
        self._reload()
        self.libc.srand(0)
        self.lib.espeak_ng_SetRandSeed(0)
        # The library silently falls back to the plain voice for an unknown variant; refuse instead.
        _, _, variant = voice.partition("+")
        unknown_variant = bool(variant) and not (self.data_path / "voices" / "!v" / variant).is_file()
        if unknown_variant or self.lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise BenchmarkError(
                f"eSpeak NG has no voice '{voice}'",
                hint="use LANGUAGE+VARIANT, e.g. 'en-us+f3' (variants: espeak-ng-data/voices/!v)",
            )
        prosody = prosody.clipped()
        for param, value in (
            (_RATE, prosody.rate),
            (_VOLUME, prosody.volume),
            (_PITCH, prosody.pitch),
            (_RANGE, prosody.range),
        ):
            self.lib.espeak_SetParameter(param, value, 0)
        data = text.encode("utf-8")
        self.chunks = []
        status = self.lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, _CHARS_AUTO, None, None)
        if status != _EE_OK:
            raise BenchmarkError(f"eSpeak NG failed to synthesise {text!r} (status {status})")
        samples = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
        return (samples.astype(np.float32) / 32768.0).clip(-1.0, 1.0)


_engine: _Engine | None = None
_lock = threading.Lock()


def synthesise(text: str, voice: str = "en-us", prosody: Prosody | None = None) -> tuple[np.ndarray, int]:
    """Speak `text` with an eSpeak NG voice ('en-us', 'en-us+f3', 'en-gb+m3', ...).

    Returns (mono float32 waveform in [-1, 1], sample rate of the library, 22050 Hz).
    Raises `BenchmarkError` when the library cannot load or the voice does not exist.
    """
    global _engine
    with _lock:
        if _engine is None:
            _engine = _Engine()
        return _engine.synthesise(text, voice, prosody or Prosody()), _engine.rate
