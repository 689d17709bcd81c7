"""Speech synthesis with the espeak-ng library bundled in `espeakng-loader` (ctypes, no subprocess).

espeak-ng keeps synthesis state in C globals (pitch flutter position, echo buffer, automatic
gain, noise generators) that carry over from one utterance to the next, so the same text
could come out slightly differently depending on what was said before. To make
`synthesize` a pure function, every call loads a fresh copy of the library, initialises it,
synthesises, terminates and unloads it again (a few ms: docs/cpu_timings.md). A module lock
serialises calls within a process; separate worker processes each load their own copy. (If
other code in the process keeps the same library loaded, the unload is a no-op and that
guarantee is lost.)

espeak-ng is GPL-3 licensed; it is used as a shared library, unmodified.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

from kdlab.data.signal import SAMPLE_RATE, resample, trim_silence
from kdlab.data.voices import Voice

ESPEAK_RATE = 22050
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3

_lock = threading.Lock()
_chunks: list[np.ndarray] = []
_CALLBACK_TYPE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def _collect(wav, count, events) -> int:
    if wav and count > 0:
        _chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
    return 0  # 0 = continue synthesis


_callback = _CALLBACK_TYPE(_collect)


def _paths() -> tuple[str, bytes]:
    try:
        import espeakng_loader
    except ImportError as error:
        raise RuntimeError("espeakng-loader is not installed: run `pip install espeakng-loader`") from error
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path().encode()


def _load() -> ctypes.CDLL:
    library_path, data_path = _paths()
    lib = ctypes.CDLL(library_path)
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
    if rate != ESPEAK_RATE:
        _unload(lib)
        raise RuntimeError(f"espeak-ng failed to initialise from {data_path.decode()} (returned {rate})")
    lib.espeak_SetSynthCallback(_callback)
    return lib


def _unload(lib: ctypes.CDLL) -> None:
    import _ctypes

    lib.espeak_Terminate()
    close = getattr(_ctypes, "dlclose", None) or _ctypes.FreeLibrary  # POSIX / Windows
    close(lib._handle)


def _check_variant(variant: str) -> None:
    """espeak-ng silently falls back to its default voice for unknown variants: refuse them."""
    from pathlib import Path

    folder = Path(_paths()[1].decode()) / "voices" / "!v"
    if not (folder / variant).is_file():
        raise ValueError(f"espeak-ng has no voice variant {variant!r}; choose a file name from {folder}")


def _synthesize_22k(text: str, voice: Voice) -> np.ndarray:
    """int16 samples at 22050 Hz, straight from espeak-ng."""
    _check_variant(voice.variant)
    with _lock:
        lib = _load()
        try:
            _chunks.clear()
            if lib.espeak_SetVoiceByName(voice.espeak_name.encode()) != 0:
                raise ValueError(
                    f"espeak-ng has no voice {voice.espeak_name!r}: use an accent from kdlab.data.voices.ACCENTS "
                    "and a variant file name from espeak-ng-data/voices/!v"
                )
            lib.espeak_SetParameter(_PARAM_RATE, voice.rate, 0)
            lib.espeak_SetParameter(_PARAM_PITCH, voice.pitch, 0)
            lib.espeak_ng_SetRandSeed(0)
            data = text.encode("utf-8") + b"\0"
            status = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if status != 0:
                raise RuntimeError(f"espeak_Synth failed with status {status} for text {text!r}")
            lib.espeak_Synchronize()
            samples = np.concatenate(_chunks) if _chunks else np.zeros(0, dtype=np.int16)
            _chunks.clear()
            return samples
        finally:
            _unload(lib)


def synthesize(text: str, voice: Voice) -> np.ndarray:
    """Speak `text` with `voice`: float32 mono (T,) in [-1, 1] at 16 kHz, silence trimmed.

    Deterministic: the same text and voice give identical samples in any process.
    """
    if not any(c.isalpha() for c in text):
        raise ValueError(f"nothing to say: text must contain letters, got {text!r}")
    samples = _synthesize_22k(text, voice)
    if len(samples) == 0:
        raise RuntimeError(f"espeak-ng produced no audio for {text!r} with voice {voice.espeak_name}")
    audio = resample(samples.astype(np.float32) / 32768.0, ESPEAK_RATE, SAMPLE_RATE)
    return np.clip(trim_silence(audio), -1.0, 1.0).astype(np.float32)  # resampling may overshoot a little
