# Rujukan: `make run` starts the whole stack locally (no Docker); `make test` runs every test.
UV ?= uv
export UV_FROZEN := 1

.PHONY: install run test check lint typecheck format compose-check bench clean soak fault

install:
	$(UV) sync --all-extras

run: install
	$(UV) run python -m shared.devstack

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

format:
	$(UV) run ruff check --fix . && $(UV) run ruff format .

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
