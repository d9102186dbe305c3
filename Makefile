# mesos-hook-executor — every target needs only the Rust toolchain.
CARGO ?= cargo
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
REV := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
DIST := dist/mesos-hook-executor-$(VERSION)-$(REV)-linux-$(shell uname -m)

.PHONY: all build test demo bench fuzz release clean lint

all: build

build:
	$(CARGO) build --bins --examples

## The test suite: unit tests, the integration suite against the agent
## emulator, and the fuzz target's body over a generated corpus.
test:
	$(CARGO) build --bins --examples
	$(CARGO) test --lib --tests -- --test-threads=2

## The main job on one machine: the real executor against the local agent
## emulator, running marathon-test-app.json's task end to end.
demo:
	$(CARGO) build --release --bin mesos-hook-executor --bin executorctl --example demo --example task-helper
	./target/release/examples/demo

## Benchmarks (medians over many runs; see README "Benchmarks").
bench:
	$(CARGO) build --release --bin mesos-hook-executor --examples
	$(CARGO) bench --bench executor

## Coverage-guided fuzzing of bytes → RecordIO → Event (needs cargo-fuzz; the
## stable toolchain is told to accept the sanitizer flags).
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run recordio_events -- -max_total_time=$${FUZZ_SECONDS:-60}

## Optimised, stripped binaries plus a tarball with a checksum in dist/.
release:
	$(CARGO) build --release --bins
	mkdir -p $(DIST)
	cp target/release/mesos-hook-executor $(DIST)/
	cp target/release/executorctl $(DIST)/
	cp README.md $(DIST)/
	tar -C dist -czf $(DIST).tar.gz $(notdir $(DIST))
	cd dist && sha256sum $(notdir $(DIST)).tar.gz > $(notdir $(DIST)).tar.gz.sha256
	@ls -l $(DIST)/mesos-hook-executor $(DIST)/executorctl $(DIST).tar.gz

clean:
	$(CARGO) clean
	rm -rf dist
