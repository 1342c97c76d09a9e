# Rujukan: `make run` starts the whole stack locally (no Docker); `make test` runs every test.
UV ?= uv
export UV_FROZEN := 1

.PHONY: install run test check lint typecheck format compose-check bench clean

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

format:
	$(UV) run ruff check --fix . && $(UV) run ruff format .

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
