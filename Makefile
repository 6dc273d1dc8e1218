# One command each (README): `make run` starts the gateway on its embedded default;
# `make test` sets everything up and runs the whole suite with coverage.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8081
# tox finds pyenv's interpreters only when told where they are.
PYENV_PYTHONS := $(wildcard $(HOME)/.pyenv/versions/*/bin/python3.1[0-3])
TOX_ENVS ?= py310,py311,py312,py313
TOX_ARGS ?=

.PHONY: setup run test lint tox clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

setup: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

run: setup
	$(BIN)/python -m tornado_gw --port=$(PORT)

lint: setup
	$(BIN)/ruff check tornado_gw tests bench

test: setup lint
	./scripts/ensure_services.sh
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest -p no:cacheprovider $(PYTEST_ARGS)
	$(BIN)/coverage combine -q
	$(BIN)/coverage report --fail-under=85
	$(BIN)/coverage report --include='tornado_gw/core/*' --fail-under=95

tox: setup
	$(BIN)/pip install --quiet 'tox>=4'
	./scripts/ensure_services.sh
	$(BIN)/tox -e $(TOX_ENVS) -p auto $(if $(PYENV_PYTHONS),--discover $(PYENV_PYTHONS)) -- -p no:cacheprovider $(TOX_ARGS)

clean:
	rm -rf $(VENV) .tox .coverage .coverage.* build *.egg-info
