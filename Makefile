# Set-up is part of each target: a fresh clone needs only `make demo` or `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo serve test test-all bench protos clean

$(BIN)/fedscore: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev,ray,parquet]'
	touch $@

# `make demo SERVE=1` ends serving the trained model until Ctrl-C; `make serve` serves the last demo's again
demo: $(BIN)/fedscore
	$(BIN)/fedscore demo $(if $(SERVE),--serve)

serve: $(BIN)/fedscore
	$(BIN)/fedscore serve fedscore-demo/job.toml

# The suite without its slowest end-to-end runs (marked slow); `make test-all` runs every test, as CI does.
test: $(BIN)/fedscore
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(BIN)/fedscore
	$(BIN)/python -m pytest -q

# Every bench at full size, one after another (best on an idle machine): writes bench/results/<date>.md,
# then the README's measured figures from it.
bench: $(BIN)/fedscore
	$(BIN)/python tools/run_benchmarks.py
	$(BIN)/python tools/readme_figures.py

protos: $(BIN)/fedscore
	$(BIN)/python tools/gen_protos.py

clean:
	rm -rf $(VENV) fedscore-demo
