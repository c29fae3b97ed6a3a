"""The report's SVG charts draw whatever values a recording holds, without failing."""

from __future__ import annotations

import re

import numpy as np
import pytest

from autoscaler.report import Band, Line, Marks, chart

T = np.arange(3.0) * 15


@pytest.mark.parametrize(
    ("x", "y"),
    [
        (T, np.full(3, -1e17)),  # a flat line beyond 2**53: y1 = y0 + 1.0 is y0 again
        (T, np.array([-1e308, 1e308, 1.0])),  # a span that overflows to infinity
        (T, np.array([0.0, 1.7e308, 1.0])),
        (np.array([0.0, 15.0, np.inf]), np.array([1.0, 2.0, 3.0])),  # a time out of range
        (np.array([0.0, np.nan, 30.0]), np.array([1.0, 2.0, 3.0])),
        (T, np.array([1.0, np.inf, -np.inf])),
    ],
)
def test_a_chart_of_extreme_values_is_drawn_with_finite_coordinates(
    x: np.ndarray, y: np.ndarray
) -> None:
    svg = chart(
        title="t",
        lines=[Line("a", x, y, "#000")],
        bands=[Band("b", x, y - 1, y + 1, "#00f")],
        marks=[Marks("m", x, y, np.ones(3, dtype=bool), "#f00")],
    )
    assert svg.endswith("</svg>")
    numbers = re.findall(r'(?:points|x\d?|y\d?)="([^"]*)"', svg)
    assert numbers and not any(w in n for n in numbers for w in ("nan", "inf"))
