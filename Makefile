# Every target creates .venv from nothing when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv lint test test-long test-fast docs-test demo demo-library bench synth-bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[pipelines,test]'
	touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(VENV)/bin/ruff check .

# The test command of the README and of CI: environment, lint, the suite but the long scenarios
# (a fresh-clone CI took 13 to 16 minutes on 2 cores; this machine's speed varies up to twofold).
test: lint
	$(PY) -m pytest -q -m "not long" --durations=25

# The multi-minute end-to-end scenarios (6 to 17 minutes on 2 cores): the local stack under faults
# (tests/e2e/test_stack.py), a lost node, the SynthScenes benchmark --fast, the GPU benchmark's CPU smoke
# run. Kept out of make test, which must fit CI's 30 minutes.
test-long: venv
	$(PY) -m pytest -q -m long --durations=10

# make demo (as pixelclip demo --model tiny) and every README/docs block as written, in a copy of the
# checkout (5 to 7.5 minutes alone; make test runs it too)
docs-test: venv
	$(PY) -m pytest -q -m docs

test-fast: venv
	$(PY) -m pytest -q -m "not slow and not dist"

# The main job on the embedded default: local stack, SynthScenes, prepare -> train -> register ->
# evaluate -> segment (pipelines/demo.py). `make demo-library` is the library alone, no services.
demo: venv
	$(PY) -m pipelines.cli demo --output out/demo

demo-library: venv
	$(PY) -m pipelines.cli demo-library --steps 20 --output out/demo-library

bench: venv
	$(PY) bench/step_breakdown.py --preset tiny

# The SynthScenes benchmark: PixelCLIP vs its ablations through the real stages; writes
# bench/synthscenes/REPORT.md (about 2 hours on 2 CPU cores). `--fast` is the minutes-long check.
synth-bench: venv
	$(PY) -m pipelines.cli synth-bench --output bench/synthscenes

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
