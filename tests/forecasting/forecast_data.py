"""Real data slices for the forecasting tests, from ``../shared/data`` beside the clone."""

from __future__ import annotations

import csv
import datetime as dt
import os
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def nab_slice(relative: str, start: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Times (epoch seconds, the local stamps read as UTC) and values of a NAB file slice."""
    path = DATA / "nab" / "data" / relative
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"real data missing in CI: {path}")
        pytest.skip(f"real data not found at {path} (shared/ beside the clone)")
    with path.open() as f:
        rows = list(csv.reader(f))[1 + start : 1 + start + length]
    times = np.array(
        [dt.datetime.fromisoformat(r[0]).replace(tzinfo=dt.UTC).timestamp() for r in rows]
    )
    return times, np.array([float(r[1]) for r in rows])
