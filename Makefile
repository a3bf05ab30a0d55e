# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both build a local virtual environment in .venv first (torch CPU build via constraints.txt).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck check bench clean proto

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/flmi demo

test: $(STAMP)
	$(PY) -m ruff check flmi tests benchmarks
	$(PY) -m mypy
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check flmi tests benchmarks
	$(PY) -m ruff format --check flmi tests benchmarks

typecheck: $(STAMP)
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) benchmarks/simulation_overhead.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache

# Regenerate the gRPC modules after editing flmi/runtime/grpc/flmi.proto (commit the result).
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iflmi/runtime/grpc=flmi/runtime/grpc --python_out=. --grpc_python_out=. --pyi_out=. flmi/runtime/grpc/flmi.proto
