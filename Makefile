# The two commands: `make run` (the daemon on the simulated library) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench bench-round bench-seeds bench-scsi bench-broker bench-http bench-api bench-intake bench-log bench-fleet fuzz-api soak deps system-deps clean

$(BIN)/python:
	scripts/ensure-system-deps python
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The daemon needs only the runtime dependencies; tests and plots add their extras.
$(VENV)/.runtime: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[test,plot]'
	touch $@ $(VENV)/.runtime

deps: $(VENV)/.installed

run: $(VENV)/.runtime
	$(BIN)/tapeworker run --config config/tapeworker.toml

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check worker drivers
	$(BIN)/mypy

test: deps
	scripts/ensure-system-deps mosquitto systemd scsi-emulation e2fsprogs
	$(MAKE) --no-print-directory lint
	$(BIN)/pytest

bench: deps
	$(BIN)/python -m worker.simulation.bench

# The planner's targets over seeds 1-5: mean, 95% interval, each seed's value (about 11
# CPU minutes over one process per CPU; baseline runs are cached in .cache/bench).
bench-seeds: deps
	$(BIN)/python -m worker.simulation.bench --seeds 5

bench-scsi: deps
	scripts/ensure-system-deps scsi-emulation
	$(BIN)/python -m drivers.sim.scsi.bench

# What saving the broker's database on every change costs (mosquitto side by side).
bench-broker: deps
	scripts/ensure-system-deps mosquitto
	$(BIN)/python -m tests.benchmarks.broker_durability --kills 20

# HTTP under load: 1,000 concurrent requests a wave and 2,000 idle connections (about two minutes).
bench-http: deps
	scripts/ensure-system-deps mosquitto
	$(BIN)/python -m tests.benchmarks.http_flood --flood 1000 --idle 2000 --seconds 20

# The index at scale: 100,000 destinations, a page, a filtered page, a 50,000 listing.
bench-api: deps
	$(BIN)/python -m tests.benchmarks.index_bench --destinations 100000 --listing 50000

# A daemon round against plan() alone at 100,000 pending requests, and an idle daemon
# with 50,000 and 100,000 it cannot serve (about five minutes).
bench-round: deps
	$(BIN)/python -m tests.benchmarks.round_bench

# MQTT and HTTP intake against bare consumers, side by side (several minutes).
bench-intake: deps
	scripts/ensure-system-deps mosquitto
	$(BIN)/python -m tests.benchmarks.intake_bench --messages 50000 --requests 2000

# One log line in each format against json.dumps and one write of it (about a minute).
bench-log: deps
	$(BIN)/python -m tests.benchmarks.log_bench --lines 20000 --rounds 7

# A fleet on one broker: intake rate and end-to-end latency with 1, 2 and 4 daemons.
bench-fleet: deps
	scripts/ensure-system-deps mosquitto
	$(BIN)/python -m tests.benchmarks.fleet_bench --events 1000 --daemons 1,2,4

# Schemathesis against the daemon with many examples per operation (make test runs 10).
fuzz-api: deps
	TAPEWORKER_FUZZ_EXAMPLES=500 $(BIN)/pytest tests/integration/test_api_fuzz.py -p no:cacheprovider --timeout 3600

soak: deps
	scripts/ensure-system-deps mosquitto
	$(BIN)/python -m tests.integration.crash --kills 200 --destinations 100 --broker-restarts 5

clean:
	rm -rf $(VENV) state .pytest_cache .mypy_cache .ruff_cache .cache
