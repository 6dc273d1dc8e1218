# One command each (README): `make run` (or `make run-ws`) starts the gateway on its embedded
# default; `make run-all` a local cluster without Docker; `make build-ws` the wheel and
# bin/wsgateway; `make test` sets everything up and runs the whole suite with coverage;
# `make lint` and `make type` the static checks.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8081
EXTRAS ?= test,type
# tox finds pyenv's interpreters only when told where they are.
PYENV_PYTHONS := $(wildcard $(HOME)/.pyenv/versions/*/bin/python3.1[0-3])
TOX_ENVS ?= py310,py311,py312,py313
TOX_ARGS ?=

.PHONY: setup run run-ws run-all build-ws test lint type tox clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

setup: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'

run run-ws: setup
	$(BIN)/python -m tornado_gw --port=$(PORT)

# Local Redis and PostgreSQL (started when installed), migrate, the relay and gateways on 8081
# and 8082 under honcho (Procfile); Ctrl-C stops them all.
run-all: setup
	PATH="$(abspath $(BIN)):$$PATH" ./scripts/run_all.sh

# dist/tornado_gw-*.whl and bin/wsgateway (one file, run by this venv's interpreter).
build-ws: setup
	./scripts/build_ws.sh $(BIN)/python

lint: setup
	$(BIN)/ruff check tornado_gw tests bench

# mypy --strict on the pure core and the ports, mypy's default checks on the rest.
type: setup
	$(BIN)/mypy
	$(BIN)/mypy --strict tornado_gw/core tornado_gw/ports.py

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
	rm -rf $(VENV) .tox .coverage .coverage.* build dist bin/wsgateway *.egg-info
