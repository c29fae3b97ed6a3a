"""Forecasting: pure numpy / scikit-learn. Arrays in, ``Forecast`` out.

Imports nothing from ``policies``, ``remediation`` or ``autoscaler``.
"""

from __future__ import annotations

from forecasting.errors import AutoscalerError, ForecastError
from forecasting.types import Forecast

__all__ = ["AutoscalerError", "Forecast", "ForecastError"]
