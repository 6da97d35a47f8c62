# The two commands of the README:
#   make demo   set up .venv (first run only) and run the main job
#   make test   set up .venv (first run only), lint, and run the test suite
# Setup is re-run when setup.py, setup.cfg or requirements/ change.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.gato-installed
LAUNCH_KIT ?= ../shared/ros2-launch-kit
PIP_INSTALL := $(BIN)/python -m pip --disable-pip-version-check --no-input install -q --progress-bar off

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): setup.py setup.cfg requirements/assets.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e ".[dev]"
	$(PIP_INSTALL) --no-deps -r requirements/assets.txt
	# the upstream `ros2 launch` and `ros2` CLI (no PyPI wheels) where this checkout has the kit beside it
	if [ -f $(LAUNCH_KIT)/install.sh ]; then bash $(LAUNCH_KIT)/install.sh $(BIN)/python; fi
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/gato-demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/tokenizer_throughput.py

clean:
	rm -rf $(VENV) build install log *.egg-info
