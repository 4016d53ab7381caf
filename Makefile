# Two entry points: `make demo` (set up + run pipelines/demo.yaml) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# pip takes torch/torchvision from local disk on the project's machines; the
# pins keep it off multi-GB downloads (see README).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1 mlflow==3.17.2

.PHONY: setup demo test clean postgres-server
SUDO ?= $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH_PINS)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/proxynas run pipelines/demo.yaml

# The multi-worker tests start a throwaway PostgreSQL server on 127.0.0.1.
postgres-server:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || \
		{ echo "installing Debian's postgresql for the multi-worker tests"; \
		  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq postgresql >/dev/null; }

test: setup postgres-server
	$(BIN)/python -m pytest -q

clean:
	rm -rf .proxynas mlruns/mlflow.db mlruns/artifacts
