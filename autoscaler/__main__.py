"""``python -m autoscaler``."""

from __future__ import annotations

import sys

from autoscaler.cli import main

sys.exit(main())
