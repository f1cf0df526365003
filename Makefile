# The commands of README.md (and `make wheels`, docs/install.md). Each first runs tools/bootstrap.py, which creates or updates
# .venv (VapourSynth R81, PyTorch, vsedvr) and returns in seconds when everything is in place.
# `make test` is the fast tier (tests marked slow deselected; docs/development.md says what each tier holds);
# `make test-all` is the whole suite, what CI runs (.ci/run). `pytest tests/test_x.py` by hand runs slow tests too.
PYTHON ?= python3
VENV := .venv

.PHONY: setup demo test test-all wheels

setup:
	$(PYTHON) tools/bootstrap.py

demo: setup
	$(VENV)/bin/python tools/demo.py

test: setup
	$(VENV)/bin/pytest -q -m "not slow"

test-all: setup
	$(VENV)/bin/pytest -q

# dist/: the manylinux wheel and the win_amd64 wheel (cross-compiled: needs gcc-mingw-w64-x86-64)
wheels: setup
	$(VENV)/bin/python tools/build_wheels.py
