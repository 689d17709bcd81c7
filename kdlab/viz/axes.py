"""Axis settings shared by the figures: counts (steps, units, ranks) get whole-number ticks.

plotly picks tick spacing for a continuous axis, so an axis over steps 0 … 4 or units 0 … 1
gets ticks at 0.5 (or −0.5 … 1.5 for a heatmap's cells). ``integer_axis(values)`` returns the
axis settings that keep every tick on a whole number: one tick per value over a short span,
whole-number labels otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Up to this many whole numbers across the axis, every one gets its tick.
EVERY_TICK_SPAN = 12


def integer_axis(values: Iterable[float]) -> dict:
    """Axis layout (``tickformat`` and, over a short span, ``tick0``/``dtick`` = 1) for whole-number ``values``."""
    values = list(values)
    settings = {"tickformat": "d"}
    if values and max(values) - min(values) <= EVERY_TICK_SPAN:
        settings.update(tick0=min(values), dtick=1)
    return settings


def whole_number_x(figure):
    """Give ``figure``'s x axis (all of its x axes) whole-number ticks over its traces' x values; returns it."""
    xs = [float(x) for trace in figure.data if trace.x is not None for x in trace.x]
    figure.update_xaxes(**integer_axis(xs))
    return figure
