"""ipywidgets panels for compression: prune to a sparsity, factorise one matrix, explore a gate.

Each panel has controls, a status line (``status``, HTML), a plotly figure (``figure``, a
``go.Figure`` updated in place and drawn by ``pane``, a ``FigurePane``), a dict ``values``
holding exactly the numbers the status line shows, and a plain ``update()`` that recomputes
everything from the controls. Moving a control calls ``update()``; it can also be called
headlessly. Any error during an update is shown in
the status line (the previous figure stays) instead of being raised. Display with
``display(panel.widget)``. The figure's widget state follows every update (a reloaded page
shows what the controls say: ``figure_pane``), and re-running a panel's cell in JupyterLab
closes the panel its earlier run made (``cell_panels``).

* ``SparsityPanel``: a sparsity slider; the encoder is pruned to that sparsity by ranking units
  (``kdlab.compress.sparsity_selection``), materialised, and measured: parameters, MACs per second
  of audio, CPU latency and real-time factor on ``dev_batch`` (``measure_latency``, short), and a
  quick dev WER when ``quick_wer_fn`` is given; latency with its spread (``latency_text``).
  Figure: remaining fraction per layer/structure, and the never-pruned front-end.
* ``RankPanel``: a matrix dropdown and a rank slider; shows the truncated-SVD error, the
  parameters of the factors against the dense matrix, and the spectrum with energy, break-even
  and chosen-rank markers.
* ``HardConcretePanel``: log α and β sliders; the sampled distribution beside its closed form.
"""

from __future__ import annotations

import html
from collections.abc import Callable

import torch
from torch import nn

from kdlab.compress.lowrank import LowRankLinear, break_even_rank, reconstruction_error
from kdlab.compress.param_count import expected_macs_per_second
from kdlab.compress.sparsity_selection import SparsitySelector
from kdlab.eval.latency import measure_latency
from kdlab.models.conformer import ConformerEncoder
from kdlab.viz.cell_panels import replace_earlier_panels
from kdlab.viz.figure_pane import FigurePane
from kdlab.viz.gate_figures import remaining_bars, remaining_ratio_figure, remaining_title
from kdlab.viz.hardconcrete_figure import hard_concrete_figure, hard_concrete_view, view_title, view_traces
from kdlab.viz.rank_figures import CHOSEN, ENERGY, spectrum_figure

FRAMES_PER_SECOND = 100.0  # input feature frames (10 ms hop)
DEFAULT_LATENCY_FRAMES = 400  # a 4 s utterance when no dev batch is given


def _error_html(error: Exception) -> str:
    return f"<span style='color:#b00'>{html.escape(type(error).__name__)}: {html.escape(str(error))}</span>"


def _slider_style() -> dict:
    return {"continuous_update": False, "style": {"description_width": "initial"}, "layout": {"width": "420px"}}


def latency_input(dev_batch, input_dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (B, T, F), lengths (B,)) to time the encoder on: a ``Batch`` (``features``,
    ``feature_lengths``), a ``(features, lengths)`` pair, or, for None, one seeded random 4 s input."""
    if dev_batch is None:
        generator = torch.Generator().manual_seed(seed)
        features = torch.randn(1, DEFAULT_LATENCY_FRAMES, input_dim, generator=generator)
        return features, torch.tensor([DEFAULT_LATENCY_FRAMES])
    if hasattr(dev_batch, "features"):
        return dev_batch.features, dev_batch.feature_lengths
    features, lengths = dev_batch
    return features, lengths


def latency_text(median_s: float, iqr_s: float, dense_median_s: float, dense_iqr_s: float) -> str:
    """The pruned and the dense model's CPU latency with their spread (interquartile range of the
    runs), saying when the medians differ by less than the larger spread: a short timing on a
    shared CPU can put the pruned model above the dense one by chance."""
    text = (
        f"CPU latency {median_s * 1e3:.1f} ms (IQR {iqr_s * 1e3:.1f}) vs dense {dense_median_s * 1e3:.1f} ms "
        f"(IQR {dense_iqr_s * 1e3:.1f})"
    )
    if abs(median_s - dense_median_s) <= max(iqr_s, dense_iqr_s):
        text += ": the difference is within the timing noise"
    return text


class SparsityPanel:
    """Sparsity slider -> pruned, materialised encoder and its measurements (module docstring).

    Args:
        encoder: ``ConformerEncoder`` with (trained) gates, or without gates plus ``scores``.
        scores: optional gate name -> (n,) unit scores (see ``SparsitySelector``).
        dev_batch: input for the latency measurement (see ``latency_input``).
        quick_wer_fn: optional ``fn(materialised_encoder) -> WER`` (a fraction) on a small dev set.
        sparsity: initial slider value.
        latency_min_time_s: ``min_time_s`` of ``measure_latency`` (short, so a move answers fast).
    Attributes: ``slider``, ``status``, ``figure`` (remaining-ratio bars, one trace per
    structure), ``model`` (the materialised encoder on screen), ``values`` (what the status shows:
    requested, sparsity, params, dense_params, removed_units, reached, macs_per_second,
    dense_macs_per_second, latency_s, latency_iqr_s, dense_latency_s, dense_latency_iqr_s,
    real_time_factor, wer, wer_error).
    """

    def __init__(
        self,
        encoder: ConformerEncoder,
        scores: dict[str, torch.Tensor] | None = None,
        dev_batch=None,
        quick_wer_fn: Callable[[ConformerEncoder], float] | None = None,
        sparsity: float = 0.3,
        latency_min_time_s: float = 0.05,
        seed: int = 0,
    ) -> None:
        import ipywidgets as widgets

        self.selector = SparsitySelector(encoder, scores)
        self.quick_wer_fn = quick_wer_fn
        self.latency_min_time_s = latency_min_time_s
        self.features, self.lengths = latency_input(dev_batch, encoder.config.input_dim, seed)
        dense_params = self.selector.apply(0)
        if dense_params != self.selector.dense_params:
            raise RuntimeError(
                f"with no unit removed the count is {dense_params}, not the encoder's "
                f"{self.selector.dense_params}: the gate states could not be reset"
            )
        dense_latency = self._latency(self.selector.encoder)
        self._dense = {
            "dense_params": dense_params,
            "dense_macs_per_second": float(expected_macs_per_second(self.selector.encoder, deterministic=True)),
            "dense_latency_s": dense_latency.median_s,
            "dense_latency_iqr_s": dense_latency.iqr_s,
        }
        self.slider = widgets.FloatSlider(
            value=sparsity,
            min=0.0,
            max=0.95,
            step=0.01,
            description="sparsity",
            readout_format=".2f",
            **_slider_style(),
        )
        self.status = widgets.HTML()
        self.values: dict = {}
        self.model: ConformerEncoder | None = None
        self.pane: FigurePane | None = None
        self.update()
        shown = self.model if self.model is not None else self.selector.encoder
        self.pane = FigurePane(remaining_ratio_figure(self.selector.encoder, shown))
        self.figure = self.pane.figure
        self.slider.observe(lambda change: self.update(), names="value")
        self.widget = widgets.VBox([self.slider, self.status, self.pane.widget])
        replace_earlier_panels(self.widget)

    def _latency(self, model: nn.Module):
        audio = float(self.lengths.sum()) / FRAMES_PER_SECOND
        return measure_latency(
            lambda: model(self.features, self.lengths),
            warmup=1,
            min_runs=3,
            min_time_s=self.latency_min_time_s,
            audio_seconds=audio,
        )

    def update(self) -> None:
        """Prune to the slider's sparsity, materialise, measure; refresh status and figure."""
        try:
            model, selection = self.selector.materialise(float(self.slider.value))
            latency = self._latency(model)
            values = {
                **self._dense,
                "requested": selection.requested,
                "sparsity": selection.sparsity,
                "params": model.num_parameters(),
                "removed_units": selection.removed_units,
                "reached": selection.reached,
                "macs_per_second": float(expected_macs_per_second(model, deterministic=True)),
                "latency_s": latency.median_s,
                "latency_iqr_s": latency.iqr_s,
                "real_time_factor": latency.real_time_factor,
                "wer": None,
                "wer_error": None,
            }
            if self.quick_wer_fn is not None:
                try:
                    values["wer"] = float(self.quick_wer_fn(model))
                except Exception as error:  # the user's callback: report it, keep the measurements
                    values["wer_error"] = _error_html(error)
        except Exception as error:
            self.status.value = _error_html(error)
            return
        self.model, self.values = model, values
        self.status.value = self._status(values)
        if self.pane is not None:
            with self.pane.editing() as figure:
                for trace, bar in zip(figure.data, remaining_bars(self.selector.encoder, model)):
                    trace.update(bar)
                figure.layout.title.text = remaining_title(self.selector.encoder, model)

    @staticmethod
    def _status(v: dict) -> str:
        reached = "" if v["reached"] else " (the requested sparsity cannot be reached: every unit is removed)"
        parts = [
            f"sparsity {v['sparsity']:.3f} (asked {v['requested']:.2f}, {v['removed_units']} units removed){reached}",
            f"params {v['params']:,} of {v['dense_params']:,}",
            f"MACs/s {v['macs_per_second'] / 1e6:.1f} M "
            f"({v['macs_per_second'] / v['dense_macs_per_second']:.1%} of dense)",
            latency_text(v["latency_s"], v["latency_iqr_s"], v["dense_latency_s"], v["dense_latency_iqr_s"])
            + f" (RTF {v['real_time_factor']:.3f})",
        ]
        if v["wer"] is not None:
            parts.append(f"dev WER {v['wer']:.2%}")
        if v["wer_error"] is not None:
            parts.append(f"dev WER failed: {v['wer_error']}")
        return " · ".join(parts)


def _matrices(model: nn.Module) -> dict[str, nn.Linear]:
    """name -> nn.Linear to inspect: ``{"linear": model}`` for a single layer, else every
    ``nn.Linear`` of the model outside low-rank layers (whose factors are not matrices to factorise)."""
    if isinstance(model, nn.Linear):
        return {"linear": model}
    inside = {name for name, m in model.named_modules() if isinstance(m, LowRankLinear)}
    found = {
        name: m for name, m in model.named_modules() if type(m) is nn.Linear and name.rpartition(".")[0] not in inside
    }
    if not found:
        raise ValueError(f"the {type(model).__name__} has no nn.Linear layer to factorise")
    return found


class RankPanel:
    """Matrix dropdown + rank slider: truncated-SVD error, factor parameters, spectrum.

    Args:
        model: an ``nn.Linear`` or a model containing some (an encoder).
        matrix_name: initial matrix (dotted module name; default the first).
        rank: initial rank (default the break-even rank, or 1).
    Attributes: ``matrix`` (dropdown), ``rank`` (slider, 1 … min(m, n)), ``status``, ``figure``
    (``spectrum_figure`` traces), ``values`` (what the status shows: name, shape, rank, error
    (‖W − A B‖_F), relative_error, energy, params, dense_params, break_even, saves).
    """

    def __init__(self, model: nn.Module, matrix_name: str | None = None, rank: int | None = None) -> None:
        import ipywidgets as widgets

        self.matrices = _matrices(model)
        names = list(self.matrices)
        if matrix_name is not None and matrix_name not in self.matrices:
            raise ValueError(
                f"no nn.Linear named {matrix_name!r}; choose one of {names[:6]}{' ...' if len(names) > 6 else ''}"
            )
        self.matrix = widgets.Dropdown(
            options=names, value=matrix_name or names[0], description="matrix", style={"description_width": "initial"}
        )
        m, n = self._weight().shape
        start = rank if rank is not None else max(1, break_even_rank(m, n))
        self.rank = widgets.IntSlider(value=start, min=1, max=min(m, n), description="rank", **_slider_style())
        self.status = widgets.HTML()
        self.values: dict = {}
        self.pane = FigurePane(spectrum_figure(self._weight(), start, title=self.matrix.value))
        self.figure = self.pane.figure
        self._switching = False
        self.update()
        self.matrix.observe(self._on_matrix, names="value")
        self.rank.observe(lambda change: None if self._switching else self.update(), names="value")
        self.widget = widgets.VBox([widgets.HBox([self.matrix, self.rank]), self.status, self.pane.widget])
        replace_earlier_panels(self.widget)

    def _weight(self) -> torch.Tensor:
        return self.matrices[self.matrix.value].weight.detach()

    def _on_matrix(self, change: dict) -> None:
        m, n = self._weight().shape
        self._switching = True
        try:
            self.rank.max = min(m, n)
            self.rank.value = max(1, break_even_rank(m, n))
        finally:
            self._switching = False
        self.update(new_matrix=True)

    def update(self, new_matrix: bool = False) -> None:
        """Recompute for the current matrix and rank; ``new_matrix`` also redraws the spectrum."""
        try:
            name, r = self.matrix.value, int(self.rank.value)
            weight = self._weight()
            m, n = weight.shape
            error = reconstruction_error(weight, r)
            norm = float(torch.linalg.matrix_norm(weight.to(torch.float64)))
            bias = m if self.matrices[name].bias is not None else 0
            limit = break_even_rank(m, n)
            spectrum = spectrum_figure(weight, r, title=name)
            values = {
                "name": name,
                "shape": (m, n),
                "rank": r,
                "error": error,
                "relative_error": error / norm if norm > 0 else 0.0,
                "energy": float(spectrum.data[ENERGY].y[r - 1]),
                "params": r * (m + n) + bias,
                "dense_params": m * n + bias,
                "break_even": limit,
                "saves": r <= limit,
            }
        except Exception as error:
            self.status.value = _error_html(error)
            return
        self.values = values
        self.status.value = self._status(values)
        with self.pane.editing() as figure:
            traces = range(len(spectrum.data)) if new_matrix else [CHOSEN]
            for index in traces:
                source, target = spectrum.data[index], figure.data[index]
                target.x, target.y, target.name, target.visible = source.x, source.y, source.name, source.visible
            figure.layout.title.text = spectrum.layout.title.text

    @staticmethod
    def _status(v: dict) -> str:
        m, n = v["shape"]
        verdict = (
            "saves parameters"
            if v["saves"]
            else f"does NOT save parameters: past the break-even rank {v['break_even']} (r < mn/(m+n))"
        )
        return (
            f"{v['name']} ({m} × {n}), rank {v['rank']}: ‖W − AB‖_F = {v['error']:.4g} "
            f"({v['relative_error']:.2%} of ‖W‖_F, energy kept {v['energy']:.2%}) · "
            f"params {v['params']:,} vs dense {v['dense_params']:,} ({v['params'] / v['dense_params']:.1%}): {verdict}"
        )


class HardConcretePanel:
    """log α and β sliders -> sampled hard-concrete masses vs the closed form.

    Attributes: ``log_alpha``, ``beta`` (sliders), ``status``, ``figure`` (``hard_concrete_figure``
    traces), ``values`` (the ``HardConcreteView`` on screen).
    """

    def __init__(
        self, log_alpha: float = 0.0, beta: float = 2.0 / 3.0, num_samples: int = 20000, bins: int = 20, seed: int = 0
    ) -> None:
        import ipywidgets as widgets

        self.num_samples, self.bins, self.seed = num_samples, bins, seed
        self.log_alpha = widgets.FloatSlider(
            value=log_alpha, min=-6.0, max=6.0, step=0.1, description="log α", **_slider_style()
        )
        self.beta = widgets.FloatSlider(
            value=beta, min=0.05, max=2.0, step=0.01, description="β (temperature)", **_slider_style()
        )
        self.status = widgets.HTML()
        self.values = None
        self.pane = FigurePane(hard_concrete_figure(log_alpha, beta, num_samples=num_samples, bins=bins, seed=seed))
        self.figure = self.pane.figure
        self.update()
        for slider in (self.log_alpha, self.beta):
            slider.observe(lambda change: self.update(), names="value")
        self.widget = widgets.VBox([widgets.HBox([self.log_alpha, self.beta]), self.status, self.pane.widget])
        replace_earlier_panels(self.widget)

    def update(self) -> None:
        """Resample for the sliders' (log α, β) and refresh the figure and the status line."""
        try:
            view = hard_concrete_view(
                float(self.log_alpha.value),
                float(self.beta.value),
                num_samples=self.num_samples,
                bins=self.bins,
                seed=self.seed,
            )
        except Exception as error:
            self.status.value = _error_html(error)
            return
        self.values = view
        with self.pane.editing() as figure:
            for trace, data in zip(figure.data, view_traces(view)):
                trace.x, trace.y = data["x"], data["y"]
            figure.layout.title.text = view_title(view)
        self.status.value = (
            f"sampled P(z = 0) = {view.sampled_zero:.3f} (closed form {view.prob_zero:.3f}), "
            f"P(z = 1) = {view.sampled_one:.3f} (closed form {view.prob_one:.3f}), "
            f"over {view.num_samples:,} samples"
        )
