"""Forecasting: pure numpy / scikit-learn. Arrays in, ``Forecast`` out.

Models (``forecasting.registry.MODEL_TYPES``): persistence, seasonal naive and seasonal
change (the last value moved as it moved one season ago), damped
Holt-Winters, a robust local trend, and ``auto`` which picks per series by recent
rolling-origin error. All forecast a batch of series at once and update online.

Imports nothing from ``policies``, ``remediation`` or ``autoscaler``.
"""

from __future__ import annotations

from forecasting.auto import Auto
from forecasting.base import OnlineForecaster
from forecasting.errors import AutoscalerError, ForecastError
from forecasting.evaluation import backtest
from forecasting.grid import clip_outliers, counter_to_rate, counter_to_rate_batch, resample
from forecasting.holt_winters import HoltWinters
from forecasting.naive import Persistence, SeasonalChange, SeasonalNaive
from forecasting.registry import MODEL_TYPES, make_model
from forecasting.trend import RobustTrend
from forecasting.types import Forecast

__all__ = [
    "MODEL_TYPES",
    "Auto",
    "AutoscalerError",
    "Forecast",
    "ForecastError",
    "HoltWinters",
    "OnlineForecaster",
    "Persistence",
    "RobustTrend",
    "SeasonalChange",
    "SeasonalNaive",
    "backtest",
    "clip_outliers",
    "counter_to_rate",
    "counter_to_rate_batch",
    "make_model",
    "resample",
]
