# The commands README gives. Every target installs what it needs first, into a
# virtual environment inside the checkout (.venv): the system interpreter is never touched.
SYSTEM_PYTHON ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip --disable-pip-version-check -q
CARGO ?= cargo
STAMP := .tools
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

# What a rebuild depends on: an install runs again only when one of these changed.
NATIVE_SOURCES := $(shell find native/src -name '*.rs') native/Cargo.toml native/Cargo.lock native/pyproject.toml
PACKAGE_SOURCES := setup.py pyproject.toml $(wildcard proto/*.proto) $(wildcard components/*) \
	$(shell find layotto_fast -name '*.pyx' -o -name '*.pxd')

# Bolt and Dubbo peers this project did not write, for the mesh's interop tests: anthunder
# (SOFA's Python Bolt client and server), dubbo-ssl-python (a Dubbo client), dubbo-py (a
# Dubbo provider).
MESH_PEERS := anthunder==0.8.1 dubbo-ssl-python==0.9.6 dubbo-py==0.2.2

.PHONY: install run test lint native-test py-test bench proto clean servers
# One step at a time, even under `make -j`: the editable install resolves the package's
# dependencies, and run before the native package is built it would look for
# layotto-fast-native on the package index.
.NOTPARALLEL:

$(PYTHON):
	$(SYSTEM_PYTHON) -m venv $(VENV)

$(STAMP)/deps: pyproject.toml native/pyproject.toml | $(PYTHON)
	mkdir -p $(STAMP)
	$(PIP) install --upgrade pip
	$(PIP) install "setuptools>=77" wheel "Cython>=3.0" "grpcio-tools>=1.60" "maturin>=1.9"
	$(PIP) install "pytest>=8" pytest-benchmark ruff mypy types-PyYAML types-protobuf grpc-stubs h2 hpack hyperframe
	$(PIP) install $(MESH_PEERS)
	touch $@

# The shipped crate, or the one with the benchmark-only designs (cargo feature
# `bench`): installing either retires the other's stamp.
$(STAMP)/native: $(STAMP)/deps $(NATIVE_SOURCES)
	$(PIP) install ./native
	rm -f $(STAMP)/native-bench
	touch $@

$(STAMP)/native-bench: $(STAMP)/deps $(NATIVE_SOURCES)
	MATURIN_PEP517_ARGS="--features bench" $(PIP) install ./native
	rm -f $(STAMP)/native
	touch $@

$(STAMP)/package: $(STAMP)/deps $(PACKAGE_SOURCES)
	$(PIP) install --no-build-isolation -e .
	touch $@

install: $(STAMP)/native $(STAMP)/package

# redis-server and etcd for the tests, from Debian's packages when missing (CI runs as root).
servers:
	@bash tests/backends/install.sh

proto: install
	$(PYTHON) proto/generate.py

run: install
	$(VENV)/bin/layotto-fast serve $(ARGS)

lint: install
	$(PYTHON) -m ruff check layotto_fast tests bench proto setup.py
	$(PYTHON) -m mypy layotto_fast
	@if $(CARGO) clippy --version >/dev/null 2>&1; then \
		cd native && $(CARGO) clippy --all-targets --quiet -- -D warnings \
		&& $(CARGO) clippy --all-targets --all-features --quiet -- -D warnings; \
	else echo "cargo clippy not installed: skipped"; fi

native-test:
	cd native && $(CARGO) test --quiet --all-features

py-test: install servers
	$(PYTHON) -m pytest $(PYTEST_ARGS)

test: install lint native-test py-test

bench: $(STAMP)/native-bench $(STAMP)/package servers
	$(PYTHON) bench/machine.py
	$(PYTHON) bench/run.py $(ARGS)
	$(PYTHON) bench/redis_backed.py $(REDIS_ARGS)
	$(PYTHON) bench/mesh.py $(MESH_ARGS)
	$(PYTHON) bench/pubsub.py $(PUBSUB_ARGS)
	$(PYTHON) -m pytest bench/micro_codecs.py -o addopts="" -q --benchmark-only --benchmark-columns=min,median,mean,ops

clean:
	rm -rf build $(STAMP) $(VENV) native/target layotto_fast/defaults
	find layotto_fast -name '*.so' -o -name '*.c' | xargs rm -f
	rm -f layotto_fast/_proto/*_pb2*.py layotto_fast/_proto/*.pyi
