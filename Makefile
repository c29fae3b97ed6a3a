# The two commands at the top of README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
APT_PACKAGES := docker.io prometheus prometheus-alertmanager busybox-static debootstrap

.PHONY: setup system-deps lint test test-fast bench demo clean

$(BIN)/autoscaler: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/autoscaler  ## the virtual environment with every Python dependency

# Real servers the integration tests drive. Installed only when missing, and only as root.
system-deps:
	@missing=""; \
	for bin in dockerd prometheus prometheus-alertmanager promtool busybox debootstrap; do \
	  command -v $$bin >/dev/null 2>&1 || missing="$$missing $$bin"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages for:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	  else \
	    echo "missing:$$missing (run as root to install $(APT_PACKAGES))"; \
	  fi; \
	fi

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: setup system-deps lint  ## everything CI runs
	$(BIN)/pytest

test-fast: setup  ## unit tests only: no servers
	$(BIN)/pytest -m "not integration"

demo: setup  ## backtest the bundled ServeGen trace: predictive vs reactive vs oracle
	$(BIN)/autoscaler backtest --demand examples/data/servegen_m-mid.csv \
	  --capacity-per-replica 50 --startup-delay 60s --target-utilization 0.7 \
	  --min 1 --max 200 --interval 60s --price-per-replica-hour 0.05 --out out/demo

bench: setup  ## figures, not assertions (sources needs the real Prometheus: run as root)
	$(BIN)/python bench/tick.py
	$(BIN)/python -m bench.sources

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis out
