# `make demo` and `make test` each set up .venv on first use (pinned requirements + this package).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Python 3.12: the one on the PATH, else pyenv's (CI runs a quick part of the suite on it).
PYTHON312 ?= $(firstword $(shell command -v python3.12 >/dev/null 2>&1 && python3.12 -V >/dev/null 2>&1 && echo python3.12) $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12))
VENV312 := .venv312
QUICK_TESTS := tests/test_compat.py tests/test_statevector.py tests/test_auto.py tests/test_layers.py tests/test_serialization.py

.PHONY: demo test test-py312 bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) requirements.txt requirements-dev.txt setup.py
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

# tests/ and the package's docstring examples (pytest.ini) on two worker processes; the slowest 15 are listed, to
# keep the suite within its ~10 minutes
test: $(STAMP)
	$(PY) -m pytest -n 2 --durations=15

$(VENV312)/.installed: requirements.txt requirements-dev.txt setup.py
	@test -n "$(PYTHON312)" || { echo "no Python 3.12 found: give PYTHON312=/path/to/python3.12"; exit 1; }
	$(PYTHON312) -m venv $(VENV312)
	$(VENV312)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(VENV312)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

test-py312: $(VENV312)/.installed  # the same stack on Python 3.12, a quick part of the suite
	$(VENV312)/bin/python -m pytest -n 2 $(QUICK_TESTS) qmoe_tfq

bench: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	$(PY) benchmarks/calibrate.py
	$(PY) benchmarks/user_models.py
	$(PY) benchmarks/peers.py --widths 4 6 8 10 12
	$(PY) benchmarks/peers.py --widths 16 --batch 4 --rounds 3  # batch 4: TC-NG's dense step took 3.2 GB there, growing with the batch
	$(PY) benchmarks/peers.py --widths 4 6 8 10 12 16 --write-only
	$(PY) benchmarks/throughput.py

clean:
	rm -rf $(VENV) $(VENV312) *.egg-info .pytest_cache
