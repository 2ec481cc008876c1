# neocascade: `make demo` and `make test` are all a new user needs; both install on first use.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH_VERSION ?= 2.13.0
export WANDB_MODE ?= offline
export PYTHONUNBUFFERED := 1

.PHONY: help install demo test calibrate bench paper paper-fg ablation ablation-fg transfer transfer-fg ship lint clean

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
	$(PY) -m neocascade.pipelines.calibrate --overwrite

paper: install  ## the seed's experiments at the seed's scale, in the background (log: outputs/paper/paper.log); PAPER_ARGS=... for overrides
	mkdir -p outputs/paper
	nohup $(PY) -m neocascade.pipelines.paper $(PAPER_ARGS) > outputs/paper/paper.log 2>&1 &
	@echo "make paper runs in the background; follow it with: tail -f outputs/paper/paper.log"

paper-fg: install  ## the same in the foreground
	$(PY) -m neocascade.pipelines.paper $(PAPER_ARGS)

ablation: install  ## the seed's cascade, then each improvement added, on paper and shifted, in the background (log: outputs/ablation/ablation.log); ABLATION_ARGS=...
	mkdir -p outputs/ablation
	nohup $(PY) -m neocascade.pipelines.ablation $(ABLATION_ARGS) > outputs/ablation/ablation.log 2>&1 &
	@echo "make ablation runs in the background; follow it with: tail -f outputs/ablation/ablation.log"

ablation-fg: install  ## the same in the foreground
	$(PY) -m neocascade.pipelines.ablation $(ABLATION_ARGS)

transfer: install  ## train on the randomized sky family and on paper, measure on held-out skies, in the background (log: outputs/transfer/transfer.log); TRANSFER_ARGS=...
	mkdir -p outputs/transfer
	nohup $(PY) -m neocascade.pipelines.transfer $(TRANSFER_ARGS) > outputs/transfer/transfer.log 2>&1 &
	@echo "make transfer runs in the background; follow it with: tail -f outputs/transfer/transfer.log"

transfer-fg: install  ## the same in the foreground
	$(PY) -m neocascade.pipelines.transfer $(TRANSFER_ARGS)

ship: install  ## put a trained cascade into the package (fp16, <= 15 MB, with provenance): make ship ARTIFACT=outputs/.../cascade.pt
	$(PY) -m neocascade.pipelines.ship artifact=$(ARTIFACT) $(SHIP_ARGS)

bench: install  ## speed benchmarks (never part of the tests) -> outputs/bench/
	$(PY) benchmarks/run_all.py

lint: install  ## byte-compile everything
	$(PY) -m compileall -q src tests benchmarks

clean:  ## remove caches and run outputs (keeps .venv)
	rm -rf outputs/* .pytest_cache && touch outputs/.gitkeep
