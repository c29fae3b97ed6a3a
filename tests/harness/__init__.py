"""Test harnesses that start real components (dockerd and a swarm) for integration tests."""
