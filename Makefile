# The commands README gives. Every target installs what it needs first.
PYTHON ?= python3
PIP := $(PYTHON) -m pip --disable-pip-version-check -q
CARGO ?= cargo
STAMP := .tools

.PHONY: install run test lint native-test py-test bench proto clean

$(STAMP)/deps: pyproject.toml native/pyproject.toml
	mkdir -p $(STAMP)
	$(PIP) install "setuptools>=68" wheel "Cython>=3.0" "grpcio-tools>=1.60" "maturin>=1.9"
	$(PIP) install "pytest>=8" pytest-benchmark ruff mypy types-PyYAML types-protobuf grpc-stubs h2 hpack hyperframe
	touch $@

# The Rust crate is its own maturin package; the Python package builds the
# protobuf modules and the Cython extensions in place (editable install).
install: $(STAMP)/deps
	$(PIP) install ./native
	$(PIP) install --no-build-isolation -e .

proto:
	$(PYTHON) proto/generate.py

run: install
	layotto-fast serve $(ARGS)

lint:
	$(PYTHON) -m ruff check layotto_fast tests bench proto setup.py
	$(PYTHON) -m mypy layotto_fast
	@if $(CARGO) clippy --version >/dev/null 2>&1; then \
		cd native && $(CARGO) clippy --all-targets --quiet -- -D warnings; \
	else echo "cargo clippy not installed: skipped"; fi

native-test:
	cd native && $(CARGO) test --quiet

py-test:
	$(PYTHON) -m pytest $(PYTEST_ARGS)

test: install lint native-test py-test

bench: install
	$(PYTHON) bench/run.py $(ARGS)

clean:
	rm -rf build $(STAMP) native/target layotto_fast/defaults
	find layotto_fast -name '*.so' -o -name '*.c' | xargs rm -f
	rm -f layotto_fast/_proto/*_pb2*.py layotto_fast/_proto/*.pyi
