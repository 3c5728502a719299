# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench fuzz clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: this exact version is a CPU build already on disk; a looser
	# requirement would download a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/weightspace demo --out results/demo

# The suite in TEST_WORKERS processes (pytest-xdist), a test file per process at a time (module fixtures are
# built once) and one torch thread each: a serial run kept about one of two cores busy (subprocesses, I/O,
# small tensors). `make test TEST_WORKERS=1` runs it serially.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -q $(if $(filter 1,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

bench: $(STAMP)
	$(BIN)/python -m pytest -q -m slow
	$(BIN)/python benchmarks/run_all.py

# Time-bounded hypothesis fuzzing of the mesh importer and the config loaders (not in CI).
fuzz: $(STAMP)
	$(BIN)/python benchmarks/fuzz_mesh.py --seconds 90
	$(BIN)/python benchmarks/fuzz_config.py --seconds 90

clean-venv:
	rm -rf $(VENV)
