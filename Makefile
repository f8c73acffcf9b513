# Two commands do all the set-up on a fresh clone:
#   make demo   installs if needed, renders the demo with the built-in tiny model (CPU, seconds)
#   make test   installs if needed, runs the fast test suite (.ci/run calls exactly this)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-slow lint clean

install:
	@bash scripts/install.sh

demo: install
	$(BIN)/localflux generate --config configs/demo.toml
	$(BIN)/localflux replay renders/demo/0001-s42.png --verify --no-progress

test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: install
	$(BIN)/ruff check localflux tests scripts

test-slow: install
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) .pytest_cache
