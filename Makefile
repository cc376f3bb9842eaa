# Two commands for a new user: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast test-stress test-all lint build bench clean-venv

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## demo: install, then run the main job end to end on the real data
demo: $(STAMP)
	$(BIN)/python -m cnn_course_instructor.demo

## test: install, then run the test suite (unit, real-data, one graded class with the hostile
## corpus, shortened notebook runs): under 5 minutes on an idle 2-core machine
test: $(STAMP)
	$(BIN)/python -m pytest -m "not browser and not stress"

## test-stress: what `make test` leaves out: the browser tests and the gradings repeated under
## CPU load, kills, concurrent runs and on a Dask cluster (about 15 minutes; CI runs it)
test-stress: $(STAMP)
	$(BIN)/python -m pytest -m "browser or stress"

## test-all: both (what CI runs)
test-all: test test-stress

## test-fast: unit tests only (seconds, no data needed)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not realdata and not slow"

lint: $(STAMP)
	$(BIN)/ruff check cnn_course cnn_course_instructor autograder tests benchmarks
	$(BIN)/ruff format --check cnn_course cnn_course_instructor autograder tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_grading.py

clean-venv:
	rm -rf $(VENV)
