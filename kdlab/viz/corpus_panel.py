"""An ipywidgets panel to synthesise one sentence and immediately hear and see it.

Controls: sentence, engine (espeak-ng or flite), accent, voice, speaking rate, pitch, noise
kind, SNR, room and channel. Every change calls `SynthesisPanel.update`, a plain method (also callable
headlessly) that renders the audio with `render` and updates, in place, the audio player and
a plotly figure (in a `FigurePane`) holding the waveform (top) and the log-mel spectrogram (bottom):
the figure keeps its x axis (time) and only the waveform `y` and spectrogram `z` change.

The noise comes from a generator seeded by the panel's `seed` on every update, so the same
settings always sound the same and moving the SNR slider only changes the noise level.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from functools import lru_cache

import numpy as np

from kdlab.data.acoustics import ROOMS, TELEPHONE_BAND_HZ, band_limit, reverberate, room_response
from kdlab.data.augment import mix_at_snr
from kdlab.data.noises import NOISE_TYPES, make_noise
from kdlab.data.voices import ACCENTS, ENGINES, FLITE_VOICES, HARD_VARIANTS, VARIANTS, Voice
from kdlab.viz.cell_panels import replace_earlier_panels
from kdlab.viz.figure_pane import FigurePane

SAMPLE_RATE = 16000
NOISE_KINDS = ("none",) + NOISE_TYPES
ROOM_KINDS = ("none",) + tuple(ROOMS)
CHANNELS = {"none": None, "telephone": TELEPHONE_BAND_HZ, "low-pass 3 kHz": (0.0, 3000.0)}
ENGINE_VOICES = {"espeak": VARIANTS + HARD_VARIANTS, "flite": tuple(FLITE_VOICES)}
BABBLE_TALKERS = 4
PEAK = 0.98  # louder results are scaled down to this peak so the player never clips


@dataclass(frozen=True)
class SynthesisSettings:
    """What the panel synthesises: a sentence, a voice, and how it is degraded."""

    text: str = "the quick brown fox jumps over the lazy dog"
    accent: str = "en-us"
    variant: str = "m3"
    rate: int = 170
    pitch: int = 50
    noise: str = "white"
    snr_db: float = 20.0
    room: str = "none"
    channel: str = "none"
    engine: str = "espeak"

    def __post_init__(self) -> None:
        for name, kinds in (
            ("noise", NOISE_KINDS),
            ("room", ROOM_KINDS),
            ("channel", tuple(CHANNELS)),
            ("engine", ENGINES),
        ):
            if getattr(self, name) not in kinds:
                raise ValueError(f"{name} must be one of {kinds}, got {getattr(self, name)!r}")

    def voice(self) -> Voice:
        if self.engine == "flite":
            return Voice.flite(self.variant, int(self.rate), int(self.pitch))
        return Voice(self.accent, self.variant, int(self.rate), int(self.pitch))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> SynthesisSettings:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown SynthesisSettings field(s): {', '.join(sorted(unknown))}")
        return cls(**data)


@dataclass(frozen=True)
class Rendered:
    """One rendered sentence; all arrays float32 at 16 kHz.

    clean `(T,)`: the synthesised voice; speech `(T,)`: its part of `audio` (reverberated and
    scaled); audio `(T,)`: what is played, speech + noise; fbank `(frames, 80)`: log-mel of audio.
    """

    clean: np.ndarray
    speech: np.ndarray
    audio: np.ndarray
    fbank: np.ndarray


@lru_cache(maxsize=2)
def babble_sources(seed: int = 0, talkers: int = BABBLE_TALKERS) -> tuple[np.ndarray, ...]:
    """`talkers` clean clips of different voices saying grammar sentences (babble noise material)."""
    from kdlab.data.espeak import synthesize
    from kdlab.data.grammar import split_sentences
    from kdlab.data.voices import make_speakers

    sentences = split_sentences({"babble": talkers}, seed)["babble"]
    voices = make_speakers({"babble": talkers}, seed)["babble"]
    return tuple(synthesize(text, voice) for text, voice in zip(sentences, voices))


def render(settings: SynthesisSettings, seed: int = 0) -> Rendered:
    """Synthesise `settings.text` and degrade it as the settings say (see the module docstring)."""
    import torch

    from kdlab.data.features import compute_fbank
    from kdlab.data.synthesis import synthesize

    clean = synthesize(settings.text, settings.voice())
    speech = clean.astype(np.float64)
    if settings.room != "none":  # the room's response has its own generator: it does not change with the noise
        speech = reverberate(speech, room_response(ROOMS[settings.room], np.random.default_rng(seed), SAMPLE_RATE))
    audio = speech
    if settings.noise != "none":
        rng = np.random.default_rng(seed)
        sources = babble_sources(seed) if settings.noise == "babble" else ()
        noise = make_noise(settings.noise, len(speech), rng, sources, BABBLE_TALKERS, SAMPLE_RATE)
        audio = mix_at_snr(speech, noise, float(settings.snr_db))
    band = CHANNELS[settings.channel]
    if band is not None:  # the channel carries speech and noise alike
        speech, audio = (band_limit(x, *band, sample_rate=SAMPLE_RATE) for x in (speech, audio))
    gain = min(1.0, PEAK / max(float(np.max(np.abs(audio))), 1e-12))
    audio = (audio * gain).astype(np.float32)
    fbank = compute_fbank(torch.from_numpy(audio)).numpy()
    return Rendered(clean, (speech * gain).astype(np.float32), audio, fbank)


def wav_bytes(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """16-bit PCM WAV file contents of a mono waveform `(T,)` in [-1, 1]."""
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.asarray(audio, dtype=np.float32), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


class SynthesisPanel:
    """Widgets + a live figure for one sentence. Show it with `display(panel.widget)`.

    Attributes: the controls (`text`, `engine`, `accent`, `variant`, `rate`, `pitch`, `noise`, `snr`,
    `room`, `channel`), `audio` (player), `status` (HTML line), `figure` (`go.Figure`: trace 0 is
    the waveform, trace 1 the log-mel heatmap, drawn by `pane`, a `FigurePane`), `rendered` (the
    `Rendered` on screen).
    The initial `settings` must be valid (ValueError otherwise).
    """

    def __init__(self, settings: SynthesisSettings = SynthesisSettings(), seed: int = 0):
        import ipywidgets as widgets

        self.seed = seed
        wide = {"description_width": "initial"}
        slider = {"continuous_update": False, "style": wide}
        self.text = widgets.Text(
            value=settings.text, description="sentence", continuous_update=False, style=wide, layout={"width": "100%"}
        )
        from kdlab.data.synthesis import available_engines

        self.engine = widgets.Dropdown(
            options=available_engines(), value=settings.engine, description="engine", style=wide
        )
        self.accent = widgets.Dropdown(options=ACCENTS, value=settings.accent, description="accent", style=wide)
        self.variant = widgets.Dropdown(
            options=ENGINE_VOICES[settings.engine], value=settings.variant, description="voice", style=wide
        )
        self.rate = widgets.IntSlider(value=settings.rate, min=80, max=450, step=5, description="rate (wpm)", **slider)
        self.pitch = widgets.IntSlider(value=settings.pitch, min=0, max=99, description="pitch", **slider)
        self.noise = widgets.Dropdown(options=NOISE_KINDS, value=settings.noise, description="noise", style=wide)
        self.snr = widgets.FloatSlider(
            value=settings.snr_db, min=-5.0, max=40.0, step=1.0, description="SNR (dB)", **slider
        )
        self.room = widgets.Dropdown(options=ROOM_KINDS, value=settings.room, description="room", style=wide)
        self.channel = widgets.Dropdown(
            options=tuple(CHANNELS), value=settings.channel, description="channel", style=wide
        )
        self.audio = widgets.Audio(format="wav", autoplay=False)
        self.status = widgets.HTML()
        self.rendered = render(self.settings(), seed)
        self.pane = FigurePane(_figure(self.rendered))  # its widget state follows every render
        self.figure = self.pane.figure
        self._show(self.rendered)
        self._switching_engine = False
        controls = (
            self.text,
            self.accent,
            self.variant,
            self.rate,
            self.pitch,
            self.noise,
            self.snr,
            self.room,
            self.channel,
        )
        for control in controls:
            control.observe(self._on_change, names="value")
        self.engine.observe(self._on_engine, names="value")
        self.widget = widgets.VBox(
            [
                self.text,
                widgets.HBox([self.engine, self.accent, self.variant, self.rate, self.pitch]),
                widgets.HBox([self.noise, self.snr, self.room, self.channel]),
                widgets.HBox([self.audio, self.status]),
                self.pane.widget,
            ]
        )
        replace_earlier_panels(self.widget)  # a re-run cell closes the panel its earlier run made

    def settings(self) -> SynthesisSettings:
        """The settings the controls show now."""
        return SynthesisSettings(
            self.text.value,
            self.accent.value,
            self.variant.value,
            self.rate.value,
            self.pitch.value,
            self.noise.value,
            self.snr.value,
            self.room.value,
            self.channel.value,
            self.engine.value,
        )

    def update(self) -> None:
        """Render the current settings; refresh the player, the status line and the figure in place.

        Unusable input (e.g. a sentence without letters) is reported in the status line and
        leaves the previous result on screen.
        """
        try:
            rendered = render(self.settings(), self.seed)
        except ValueError as error:
            self.status.value = f"<span style='color:#b00'>cannot synthesise: {error}</span>"
            return
        self.rendered = rendered
        self._show(rendered)
        with self.pane.editing() as figure:  # a reloaded page shows this render too
            figure.data[0].y = rendered.audio
            figure.data[1].z = rendered.fbank.T

    def _show(self, rendered: Rendered) -> None:
        """Player and status line for `rendered`."""
        settings = self.settings()
        self.snr.disabled = settings.noise == "none"
        self.accent.disabled = settings.engine == "flite"  # a flite voice speaks its own accent
        self.audio.value = wav_bytes(rendered.audio)
        seconds = len(rendered.audio) / SAMPLE_RATE
        parts = ["clean" if settings.noise == "none" else f"{settings.noise} noise at {settings.snr_db:g} dB SNR"]
        parts += [f"{settings.room} room"] * (settings.room != "none") + [settings.channel] * (
            settings.channel != "none"
        )
        self.status.value = f"{settings.voice().name}: {seconds:.2f} s, {', '.join(parts)}"

    def _on_change(self, change: dict) -> None:
        if not self._switching_engine:
            self.update()

    def _on_engine(self, change: dict) -> None:
        """Offer the new engine's voices (its first one selected), then render once."""
        self._switching_engine = True
        try:
            self.variant.options = ENGINE_VOICES[change["new"]]
            self.variant.value = ENGINE_VOICES[change["new"]][0]
        finally:
            self._switching_engine = False
        self.update()


def _figure(rendered: Rendered):
    """Figure with the waveform (trace 0, top) and log-mel spectrogram (trace 1) of `rendered`."""
    from plotly.subplots import make_subplots

    from kdlab.viz.corpus_figures import spectrogram_trace, waveform_trace

    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.4, 0.6])
    figure.add_trace(waveform_trace(rendered.audio, SAMPLE_RATE), row=1, col=1)
    figure.add_trace(spectrogram_trace(rendered.fbank), row=2, col=1)
    figure.update_traces(colorbar={"len": 0.55, "y": 0.28}, selector={"type": "heatmap"})
    figure.update_layout(height=460, margin={"t": 20, "b": 40}, showlegend=False)
    figure.update_xaxes(title_text="time (s)", row=2, col=1)
    figure.update_yaxes(title_text="amplitude", row=1, col=1)
    figure.update_yaxes(title_text="mel bin", row=2, col=1)
    return figure
