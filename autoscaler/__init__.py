"""autoscaler: the service (config, sources, window store, engine, action bus, journal,
drivers, HTTP server and CLI)."""

from __future__ import annotations

__version__ = "0.1.0"
