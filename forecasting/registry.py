"""Model names (as written in ``[forecasting] model``) → model classes."""

from __future__ import annotations

from typing import Any

from forecasting.auto import Auto
from forecasting.base import OnlineForecaster
from forecasting.errors import ForecastError
from forecasting.holt_winters import HoltWinters
from forecasting.naive import Persistence, SeasonalChange, SeasonalNaive
from forecasting.trend import RobustTrend

MODEL_TYPES: dict[str, type[OnlineForecaster]] = {
    "auto": Auto,
    "persistence": Persistence,
    "seasonal-naive": SeasonalNaive,
    "seasonal-change": SeasonalChange,
    "holt-winters": HoltWinters,
    "robust-trend": RobustTrend,
}


def make_model(name: str, **params: Any) -> OnlineForecaster:
    """A new, unfitted model by name. Raises ``ForecastError`` for an unknown name."""
    try:
        cls = MODEL_TYPES[name]
    except KeyError:
        known = ", ".join(MODEL_TYPES)
        raise ForecastError(f"unknown forecasting model {name!r} (known: {known})") from None
    return cls(**params)
