# neocascade: `make demo` and `make test` are all a new user needs; both install on first use.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH_VERSION ?= 2.13.0
export WANDB_MODE ?= offline
export PYTHONUNBUFFERED := 1

.PHONY: help install demo test calibrate bench lint clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==$(TORCH_VERSION)
	echo "torch==$(TORCH_VERSION)" > $(VENV)/torch-constraint.txt
	$(PIP) install -q -c $(VENV)/torch-constraint.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed  ## create .venv: torch==2.13.0 (CPU) first, then neocascade with dev extras

demo: install  ## simulate the demo data set, train the seed's cascade, evaluate and detect
	$(PY) -m neocascade.pipelines.demo

test: install  ## run the test suite
	$(PY) -m pytest -q

calibrate: install  ## simulator statistics on 20 full quadrants vs the targets -> outputs/calibration.json
	$(PY) -m neocascade.pipelines.calibrate

bench: install  ## speed benchmarks (never part of the tests) -> outputs/bench/
	$(PY) benchmarks/run_all.py

lint: install  ## byte-compile everything
	$(PY) -m compileall -q src tests benchmarks

clean:  ## remove caches and run outputs (keeps .venv)
	rm -rf outputs/* .pytest_cache && touch outputs/.gitkeep
