"""One entry point for both synthesis engines: `synthesize(text, voice)` speaks with the engine the
voice names (espeak-ng in process, flite as a subprocess); `available_engines` says which run here."""

from __future__ import annotations

import numpy as np

from kdlab.data.voices import Voice


def synthesize(text: str, voice: Voice) -> np.ndarray:
    """Speak `text` with `voice`: float32 mono (T,) in [-1, 1] at 16 kHz, silence trimmed.
    Deterministic: the same text and voice give identical samples in any process."""
    if not any(c.isalpha() for c in text):
        raise ValueError(f"nothing to say: text must contain letters, got {text!r}")
    if voice.engine == "flite":
        from kdlab.data.flite import synthesize_flite

        return synthesize_flite(text, voice)
    from kdlab.data.espeak import synthesize as synthesize_espeak

    return synthesize_espeak(text, voice)


def available_engines() -> tuple[str, ...]:
    """The engines that can speak on this machine (espeak-ng always: it ships in a wheel)."""
    from kdlab.data.flite import flite_available

    return ("espeak", "flite") if flite_available() else ("espeak",)
