"""``python -m autoscaler``."""

from __future__ import annotations

import sys

from autoscaler.entry import main

sys.exit(main())
