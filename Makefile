# The two commands of README.md (and `make wheels`, docs/install.md). Both first run tools/bootstrap.py, which creates or updates
# .venv (VapourSynth R81, PyTorch, vsedvr) and returns in seconds when everything is in place.
PYTHON ?= python3
VENV := .venv

.PHONY: setup demo test wheels

setup:
	$(PYTHON) tools/bootstrap.py

demo: setup
	$(VENV)/bin/python tools/demo.py

test: setup
	$(VENV)/bin/pytest -q

# dist/: the manylinux wheel and the win_amd64 wheel (cross-compiled: needs gcc-mingw-w64-x86-64)
wheels: setup
	$(VENV)/bin/python tools/build_wheels.py
