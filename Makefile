# janus_jax developer entry points. Each target installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# Test processes (pytest-xdist; each test file runs in one of them, so module fixtures compile once). CI has 2 cores.
TEST_WORKERS ?= 2

.PHONY: install test demo bench bench-flow clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

## Run the whole test suite (CPU, offline), in TEST_WORKERS processes (TEST_WORKERS=0: one process).
test: install
	$(PY) -m pytest -q tests -n $(TEST_WORKERS) --dist loadfile --durations=20 $(PYTEST_ARGS)

## Run the main job on the embedded default data (prints where it wrote its outputs).
## GEN=flow runs the JanusFlow (rectified-flow) variant instead of the default AR-VQ Janus; GEN=ar_continuous the
## continuous-token mode (KL-VAE latent tokens, a per-token flow head).
GEN ?= ar_vq
demo: install
	$(PY) -m janus_jax.main --config=experiments/shapes_demo.py:gen=$(GEN) \
	  --workdir=$(or $(WORKDIR),workdir/demo$(if $(filter-out ar_vq,$(GEN)),_$(GEN),))

## Benchmark JanusFlow sampling with and without the prompt KV cache.
bench-flow: install
	$(PY) bench/bench_flow_sampling.py

## Benchmark the compiled AR image decode against transformers on the same random config.
bench: install
	$(PY) bench/bench_ar_decode.py

clean:
	rm -rf $(VENV) workdir
