# `make demo` and `make test` each set up .venv on first use (pinned requirements + this package).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) requirements.txt requirements-dev.txt setup.py
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(PY) -m pytest -n 2  # tests/ and the package's docstring examples (pytest.ini), on two worker processes

bench: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	$(PY) benchmarks/calibrate.py
	$(PY) benchmarks/user_models.py
	$(PY) benchmarks/peers.py
	$(PY) benchmarks/throughput.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
