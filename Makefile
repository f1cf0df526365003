# The two commands of README.md. Both first run tools/bootstrap.py, which creates or updates
# .venv (VapourSynth R81, PyTorch, vsedvr) and returns in seconds when everything is in place.
PYTHON ?= python3
VENV := .venv

.PHONY: setup demo test

setup:
	$(PYTHON) tools/bootstrap.py

demo: setup
	$(VENV)/bin/python tools/demo.py

test: setup
	$(VENV)/bin/pytest -q
