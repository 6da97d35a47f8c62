# The two commands of the README:
#   make demo   set up .venv (first run only) and run the main job
#   make test   set up .venv (first run only), lint, run the test suite, then `make test-pythons`
# Setup is re-run when setup.py, setup.cfg or requirements/ change.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.gato-installed
LAUNCH_KIT ?= ../shared/ros2-launch-kit
PIP := -m pip --disable-pip-version-check --no-input install -q --progress-bar off
PIP_INSTALL := $(BIN)/python $(PIP)

.PHONY: setup demo test lint bench clean test-pythons

# `make test-pythons`: the tests that need neither torch nor pybullet (core, ONNX runtime, ROS nodes and wire, logs,
# packaging and colcon builds) on the Pythons of the other ROS 2 distributions: 3.10 (Humble), 3.12 (Jazzy, Kilted).
# Each gets a small venv in $(VENV)/pythons/<version>: `-e ".[onnx,ros-wheels]"`, requirements/pythons.txt, the
# assets and the launch kit. An absent Python is skipped with a message. torch==2.13.0 here is a 3.11-only CPU build.
OTHER_PYTHONS ?= 3.10 3.12
PYENV_VERSIONS ?= $(or $(PYENV_ROOT),$(HOME)/.pyenv)/versions
PYTHONS_TESTS ?= tests/test_architecture.py tests/test_tokenizer.py tests/test_sequence.py tests/test_safety_filter.py \
	tests/test_results.py tests/test_episodes.py tests/test_bad_input.py tests/test_ensemble.py tests/test_ros_guard.py \
	tests/test_ros_stack.py tests/test_ros_wire.py tests/test_logs_bag.py tests/test_logs_chunk_damage.py \
	tests/test_logs_convert.py tests/test_packaging.py
# gato-train's bad-input cases import torch
PYTHONS_PYTEST_ARGS ?= -q -p no:cacheprovider -k "not gato-train"
# the newest pyenv patch release of Python $(1), else python$(1) on PATH if it runs; prints nothing when absent
find_python = { ls -d $(PYENV_VERSIONS)/$(1).*/bin/python 2>/dev/null | sort -V | tail -n 1 | grep . || \
	{ python$(1) -c '' 2>/dev/null && command -v python$(1); }; }

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
	$(MAKE) --no-print-directory test-pythons

# the venvs are made two at a time (mostly downloads), then each version's tests run; a failing version does not
# stop the next one, and the target fails naming every version that failed
test-pythons:
	@found=""; for v in $(OTHER_PYTHONS); do \
	  if [ -n "$$($(call find_python,$$v))" ]; then found="$$found $$v"; \
	  else echo "test-pythons: SKIPPED Python $$v: not in $(PYENV_VERSIONS) nor on PATH as python$$v"; fi; \
	done; \
	[ -z "$$found" ] || $(MAKE) --no-print-directory -j2 $$(for v in $$found; do echo $(VENV)/pythons/$$v/.installed; done) \
	  || exit 1; \
	failed=""; for v in $$found; do $(MAKE) --no-print-directory test-python-$$v || failed="$$failed $$v"; done; \
	[ -z "$$failed" ] || { echo "test-pythons: FAILED on Python$$failed"; exit 1; }

.PRECIOUS: $(VENV)/pythons/%/.installed
test-python-%: $(VENV)/pythons/%/.installed
	@echo "test-pythons: Python $$($(VENV)/pythons/$*/bin/python -V 2>&1 | cut -d' ' -f2)"
	cd $(CURDIR) && $(VENV)/pythons/$*/bin/python -m pytest $(PYTHONS_PYTEST_ARGS) $(PYTHONS_TESTS)

$(VENV)/pythons/%/.installed: setup.py setup.cfg requirements/pythons.txt requirements/assets.txt
	py=$$($(call find_python,$*)) && test -n "$$py" && rm -rf $(VENV)/pythons/$* && $$py -m venv $(VENV)/pythons/$*
	$(VENV)/pythons/$*/bin/python $(PIP) -e ".[onnx,ros-wheels]" -r requirements/pythons.txt
	# data files only, never imported: mistral-common 1.13.1 declares Python >= 3.11 (the model file is the same)
	$(VENV)/pythons/$*/bin/python $(PIP) --no-deps --ignore-requires-python -r requirements/assets.txt
	if [ -f $(LAUNCH_KIT)/install.sh ]; then bash $(LAUNCH_KIT)/install.sh $(VENV)/pythons/$*/bin/python; fi
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/tokenizer_throughput.py

clean:
	rm -rf $(VENV) build install log *.egg-info
