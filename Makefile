# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each first builds the project-local virtual environment .venv from pinned requirements.
PYTHON ?= python3
VENV := .venv
COLCON := .venv-colcon/bin/colcon
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test test-fast lint bench bench-deps clean

ROS_IFACE := ros2_ws/src/mbmpo_interfaces
$(STAMP): requirements.txt requirements-ros.txt pyproject.toml scripts/build_interfaces.sh \
          $(ROS_IFACE)/package.xml $(ROS_IFACE)/CMakeLists.txt $(wildcard $(ROS_IFACE)/msg/*.msg)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the local CPU build (an unpinned torch pulls a multi-GB CUDA build)
	$(PY) -m pip install -q torch==2.13.0
	# the library's and the ROS 2 Jazzy wheels' pins, resolved together
	$(PY) -m pip install -q -r requirements.txt -r requirements-ros.txt
	# the custom message package, built with the wheels and installed into the venv
	bash scripts/build_interfaces.sh $(VENV)
	$(PY) -m pip install -q --no-deps -e . -e ros2_ws/src/mbmpo_ros
	# colcon in a venv of its own (it pins an older setuptools): the colcon-build test of the ROS package
	test -x $(COLCON) || $(PYTHON) -m venv .venv-colcon
	.venv-colcon/bin/pip install -q colcon-common-extensions==0.3.0 colcon-core==0.21.3 colcon-ros==0.5.0
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	rm -rf runs/demo
	$(VENV)/bin/mbmpo-bringup train sim:=mujoco task:=InvertedPendulum-v5 out:=runs/demo steps:=20000 target_return:=190 duration:=900

test: $(STAMP) lint
	$(PY) -m pytest -q tests

# ruff and mypy, pinned in requirements.txt, configured in pyproject.toml
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

bench: $(STAMP)
	$(PY) benchmarks/throughput.py --out benchmarks/results_throughput.json

# the model-free peer of benchmarks/sample_efficiency.py (Stable-Baselines3); not needed by the tests
bench-deps: $(STAMP)
	$(PY) -m pip install -q -r requirements-bench.txt

clean:
	rm -rf $(VENV) .venv-colcon runs
