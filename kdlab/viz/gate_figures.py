"""What L0 pruning keeps: gate heatmaps over training and remaining sizes per layer.

* ``gate_heatmap_figure(history, structure)``: layer × unit heatmap of P(z ≠ 0) for one gated
  structure, one plotly frame per history record with ``"gates"`` (slider + play button). The
  heatmap values are the recorded probabilities exactly (NaN where a layer has fewer units).
* ``remaining_ratio_figure(original, compressed)``: grouped bars, per layer, of the fraction of
  heads / FFN units / conv channels / parameters that the (materialised) compressed encoder
  really has, measured on its modules, and a bar for the front-end, which is never pruned.

History shape: see ``kdlab.viz.compression_history``.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from torch import nn

from kdlab.viz.axes import integer_axis
from kdlab.viz.compression_history import BRANCH_GATES, as_list, as_records, mapping_history, split_gate_name

BRANCHES = "branches"
#: Structures listed first, in block order; others (rank components, ...) follow sorted.
STRUCTURE_ORDER = ("attn", "ffn1", "conv", "ffn2", BRANCHES)
STRUCTURE_TITLES = {
    "attn": "attention heads",
    "ffn1": "FFN1 units",
    "conv": "conv channels",
    "ffn2": "FFN2 units",
    BRANCHES: "residual branches",
}
ROW_OUTSIDE_BLOCKS = "-"
#: ``remaining_ratio_figure``: the x category of the parameters outside the blocks.
FRONT_END = "front-end (not pruned)"
#: Heatmap animation: the fraction of the width left of the slider, where the play/pause buttons go.
CONTROLS_SPLIT = 0.15


def _structure_of(name: str) -> str:
    layer, rest = split_gate_name(name)
    return BRANCHES if layer is not None and rest in BRANCH_GATES else rest


def gate_structures(history) -> list[str]:
    """Gated structures found in the history's ``"gates"`` records: "attn", "ffn1", "conv",
    "ffn2", "branches" (in that order when present), then any other (e.g. "attn.q_proj")."""
    return _ordered_structures(mapping_history(as_records(history), "gates")[1])


def _ordered_structures(gate_dicts: list[dict]) -> list[str]:
    found = {_structure_of(name) for gates in gate_dicts for name in gates}
    first = [s for s in STRUCTURE_ORDER if s in found]
    return first + sorted(found - set(first))


def _row_label(layer: int | None) -> str:
    return ROW_OUTSIDE_BLOCKS if layer is None else f"layer {layer}"


def _grid(gate_dicts: list[dict], structure: str) -> tuple[list[int | None], list]:
    """Rows (layers, a gate outside blocks as None) and columns (unit indices, or branch names)."""
    layers: set[int | None] = set()
    width = 0
    for gates in gate_dicts:
        for name, value in gates.items():
            if _structure_of(name) == structure:
                layers.add(split_gate_name(name)[0])
                width = max(width, len(as_list(value)))
    if not layers:
        raise ValueError(f"no gate of structure {structure!r} in the history; found: {_ordered_structures(gate_dicts)}")
    columns = [b.removesuffix("_gate") for b in BRANCH_GATES] if structure == BRANCHES else list(range(width))
    return sorted(layers, key=lambda v: -1 if v is None else v), columns


def gate_matrix(gates: dict, structure: str, layers: list[int | None], columns: list) -> np.ndarray:
    """(layers, columns) float array of one record's gate probabilities for ``structure`` (NaN = no unit)."""
    z = np.full((len(layers), len(columns)), np.nan)
    for name, value in gates.items():
        if _structure_of(name) != structure:
            continue
        layer, rest = split_gate_name(name)
        row = layers.index(layer)
        values = as_list(value)
        if structure == BRANCHES:
            z[row, columns.index(rest.removesuffix("_gate"))] = values[0]
        else:
            z[row, : len(values)] = values
    return z


def gate_heatmap_figure(history, structure: str = "ffn1", title: str | None = None) -> go.Figure:
    """Layer × unit heatmap of P(z ≠ 0) for ``structure`` with a slider over the recorded steps.

    ``figure.frames[k].data[0].z`` is the (layers, units) matrix of the k-th record with gates
    (``frames[k].name`` is its step); the figure opens on the last record. Raises ``ValueError``
    if the history has no ``"gates"`` records or no gate of that structure.
    """
    steps, gate_dicts = mapping_history(as_records(history), "gates")
    if not gate_dicts:
        raise ValueError("the history has no 'gates' records: log GateSet.probabilities() in the record callback")
    layers, columns = _grid(gate_dicts, structure)
    rows = [_row_label(layer) for layer in layers]
    matrices = [gate_matrix(gates, structure, layers, columns) for gates in gate_dicts]
    x = [str(c) for c in columns] if structure == BRANCHES else columns

    def heatmap(z: np.ndarray) -> go.Heatmap:
        return go.Heatmap(
            z=z,
            x=x,
            y=rows,
            zmin=0.0,
            zmax=1.0,
            colorscale="Viridis",
            colorbar={"title": {"text": "P(z≠0)"}},
            hovertemplate="%{y}, unit %{x}: %{z:.3f}<extra></extra>",
        )

    frames = [go.Frame(data=[heatmap(z)], name=str(step)) for step, z in zip(steps, matrices)]
    still = {"mode": "immediate", "frame": {"duration": 0, "redraw": True}, "transition": {"duration": 0}}
    # The play/pause buttons sit left of the slider (they end at CONTROLS_SPLIT, where it starts) and
    # the current step is written at the slider's right end, so neither covers the other.
    slider = {
        "active": len(frames) - 1,
        "x": CONTROLS_SPLIT,
        "len": 1.0 - CONTROLS_SPLIT,
        "xanchor": "left",
        "y": 0.0,
        "yanchor": "top",
        "pad": {"t": 45, "b": 10},
        "currentvalue": {"prefix": "step ", "xanchor": "right"},
        "steps": [{"label": frame.name, "method": "animate", "args": [[frame.name], still]} for frame in frames],
    }
    play = {
        "type": "buttons",
        "direction": "left",
        "x": CONTROLS_SPLIT,
        "xanchor": "right",
        "y": 0.0,
        "yanchor": "top",
        "pad": {"t": 55, "r": 10},
        "buttons": [
            {
                "label": "play",
                "method": "animate",
                "args": [None, {"mode": "immediate", "fromcurrent": True, "frame": {"duration": 200, "redraw": True}}],
            },
            {"label": "pause", "method": "animate", "args": [[None], still]},
        ],
    }
    figure = go.Figure(data=[heatmap(matrices[-1])], frames=frames)
    figure.update_layout(
        title=title or f"P(z ≠ 0) of the {STRUCTURE_TITLES.get(structure, structure)} gates",
        xaxis={
            "title": {"text": "branch" if structure == BRANCHES else "unit"},
            **({} if structure == BRANCHES else integer_axis(columns)),
        },
        yaxis={"autorange": "reversed"},
        sliders=[slider],
        updatemenus=[play],
        height=max(320, 60 + 28 * len(rows)) + 120,
        margin={"t": 50, "b": 40},
    )
    return figure


def _sizes(block: nn.Module) -> dict[str, int]:
    """Units of each branch of a conformer block (0 for an absent branch)."""
    return {
        "heads": block.attn.num_heads if block.attn is not None else 0,
        "FFN1 units": block.ffn1.linear2.in_features if block.ffn1 is not None else 0,
        "conv channels": block.conv.depthwise.in_channels if block.conv is not None else 0,
        "FFN2 units": block.ffn2.linear2.in_features if block.ffn2 is not None else 0,
    }


def block_num_parameters(block: nn.Module) -> int:
    """Parameters of one block, excluding gate modules (as ``ConformerEncoder.num_parameters``)."""
    gates = {
        id(p)
        for name, module in block.named_modules()
        if name.split(".")[-1].endswith("gate")
        for p in module.parameters()
    }
    return sum(p.numel() for p in block.parameters() if id(p) not in gates)


def remaining_ratios(original: nn.Module, compressed: nn.Module) -> dict[str, list[float]]:
    """Per structure ("heads", "FFN1 units", "conv channels", "FFN2 units", "parameters"), the
    per-layer ratio compressed / original of real module sizes (NaN where the original has none).

    ``compressed`` is measured as it is: pass the materialised encoder (``materialise``), since
    a gated encoder still holds every unit. Both must have the same number of blocks.
    """
    if len(original.blocks) != len(compressed.blocks):
        raise ValueError(
            f"the encoders have {len(original.blocks)} and {len(compressed.blocks)} blocks; "
            "compare a model with its own compressed version"
        )
    ratios: dict[str, list[float]] = {}
    for before, after in zip(original.blocks, compressed.blocks):
        dense, kept = _sizes(before), _sizes(after)
        dense["parameters"], kept["parameters"] = block_num_parameters(before), block_num_parameters(after)
        for key in dense:
            ratios.setdefault(key, []).append(kept[key] / dense[key] if dense[key] else math.nan)
    return ratios


def outside_blocks_parameters(encoder: nn.Module) -> int:
    """Parameters of the encoder outside its blocks (the convolutional front-end), which no method prunes."""
    return encoder.num_parameters() - sum(block_num_parameters(block) for block in encoder.blocks)


def remaining_bars(original: nn.Module, compressed: nn.Module) -> list[dict]:
    """The traces of ``remaining_ratio_figure`` as dicts (``name``, ``x``, ``y``, ``text``, ``showlegend``).

    x: the layers, then ``FRONT_END`` (only the "parameters" bar has a value there: what remains
    of the front-end, 1.0 since nothing prunes it); y is None where there is no bar. A bar at 0 is
    labelled "0" so a structure removed from one layer is seen; a structure removed from every layer has no legend entry
    (no bar would show its colour) and is named in the title instead (``remaining_title``).
    """
    ratios = remaining_ratios(original, compressed)
    x = [_row_label(i) for i in range(len(original.blocks))] + [FRONT_END]
    front_end = outside_blocks_parameters(compressed) / outside_blocks_parameters(original)
    bars = []
    for key, values in ratios.items():
        # None, not NaN, where a bar has no value: a panel's figure state travels as JSON
        y = [None if math.isnan(v) else v for v in values] + [front_end if key == "parameters" else None]
        bars.append(
            {
                "name": key,
                "x": x,
                "y": y,
                "text": ["0" if v == 0 else "" for v in y],
                "showlegend": not _removed_everywhere(values),
            }
        )
    return bars


def _removed_everywhere(values: list[float]) -> bool:
    present = [v for v in values if not math.isnan(v)]
    return bool(present) and all(v == 0 for v in present)


def remaining_title(original: nn.Module, compressed: nn.Module) -> str:
    """Default title of ``remaining_ratio_figure``: what remains of the whole encoder and of its
    blocks, that the front-end is never pruned, and the structures removed from every layer."""
    fraction = compressed.num_parameters() / original.num_parameters()
    blocks = sum(map(block_num_parameters, compressed.blocks)) / sum(map(block_num_parameters, original.blocks))
    title = (
        f"What remains per layer: {fraction:.1%} of the encoder's parameters<br><sup>blocks keep "
        f"{blocks:.1%} · front-end ({outside_blocks_parameters(original):,} params) never pruned"
    )
    gone = [key for key, values in remaining_ratios(original, compressed).items() if _removed_everywhere(values)]
    return title + (f" · removed everywhere: {', '.join(gone)}" if gone else "") + "</sup>"


def remaining_ratio_figure(original: nn.Module, compressed: nn.Module, title: str | None = None) -> go.Figure:
    """Grouped bars: per layer (x), one trace per structure with ``remaining_ratios`` (y), and the
    front-end's remaining parameters as its own bar (``remaining_bars``).

    The title gives the whole encoder's remaining parameter fraction (``num_parameters()``).
    """
    figure = go.Figure([go.Bar(**bar, textposition="outside") for bar in remaining_bars(original, compressed)])
    figure.update_layout(
        title=title or remaining_title(original, compressed),
        barmode="group",
        yaxis={"title": "remaining fraction", "range": [0, 1.1]},
        height=360,
        margin={"t": 70, "b": 40},
    )
    return figure
