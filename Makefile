# mesos-hook-executor. Prerequisites (README, "The two commands"): Linux, Rust
# 1.85+, a C compiler, make, git. `make release` also needs cargo-zigbuild and
# ziglang (installed with pip when missing); vagrant-* need Vagrant with
# VirtualBox or libvirt (vagrant/README.md).
CARGO ?= cargo
# Cargo's output directory: CARGO_TARGET_DIR when set, as cargo itself does.
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
REV := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
# Release binaries link against glibc 2.17 symbols at most (CentOS 7 and
# later), whatever the build machine's glibc: cargo-zigbuild links with zig
# against that glibc version's symbol set.
GLIBC_FLOOR := 2.17
RELEASE_TARGET := x86_64-unknown-linux-gnu
RELEASE_DIR := $(TARGET_DIR)/$(RELEASE_TARGET)/release
DIST := dist/mesos-hook-executor-$(VERSION)-$(REV)-linux-x86_64

.PHONY: all build tools test test-mesos demo bench fuzz release release-tools completions clean lint vagrant-up vagrant-deploy vagrant-destroy

all: build

build:
	$(CARGO) build --bins --examples

## The test suite: lints, shell scripts and Vagrantfile
## (scripts/lint-scripts.sh), unit tests, the integration suite against the
## agent emulator, and the fuzz target's body over a generated corpus; then a
## closing summary (totals, ignored and skipped checks with why:
## scripts/run-tests.sh).
test: tools build lint
	CARGO="$(CARGO)" bash scripts/run-tests.sh

## The executor under a real Mesos master and agent (tests/mesos/,
## docs/real-mesos.md): $$MESOS_HOME, else ../shared/mesos; none is an error.
## `make test` runs it too when it finds a Mesos, else its summary says why not.
test-mesos: tools
	CARGO="$(CARGO)" bash scripts/mesos-suite.sh

## The real tools the tests run (scripts/test-tools.txt): installed with apt
## when run as root, otherwise the run stops naming the missing packages.
tools:
	bash scripts/require-tools.sh

## Lints: rustfmt (default width) and clippy on every target with warnings as
## errors (the allow-list, with reasons, is [lints.clippy] in Cargo.toml); the
## real-Mesos suite is not a default test target, so it is named on its own.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --test mesos -- -D warnings

## The main job on one machine: the real executor against the local agent
## emulator, running marathon-test-app.json's task end to end. It builds what
## `make test` builds (the dev profile, same command), so either reuses the
## other's artefacts; a release build (fat LTO) would cost minutes and share
## nothing.
demo: build
	$(TARGET_DIR)/debug/examples/demo

## Benchmarks (medians over many runs; see docs/benchmarks.md), taken with
## the executor as shipped: it is built alone and copied aside first, because
## `cargo bench` rebuilds the crate's binaries with the dev-dependencies'
## features (the emulator, tokio's test-util). BENCH_EXECUTOR=<path> takes the
## figures with another build instead (interleaved before/after runs).
BENCH_EXECUTOR ?= $(TARGET_DIR)/bench/mesos-hook-executor
bench:
	$(CARGO) build --release --bin mesos-hook-executor
	mkdir -p $(TARGET_DIR)/bench
	cp $(TARGET_DIR)/release/mesos-hook-executor $(TARGET_DIR)/bench/
	$(CARGO) build --release --examples
	BENCH_EXECUTOR=$(BENCH_EXECUTOR) $(CARGO) bench --bench executor
	BENCH_EXECUTOR=$(BENCH_EXECUTOR) $(CARGO) bench --bench logs
	BENCH_EXECUTOR=$(BENCH_EXECUTOR) $(CARGO) bench --bench metrics
	BENCH_EXECUTOR=$(BENCH_EXECUTOR) $(CARGO) bench --bench remote

## Coverage-guided fuzzing of bytes → RecordIO → Event and of remote API
## requests (method, target, body) through every parser (needs cargo-fuzz; the
## stable toolchain is told to accept the sanitizer flags).
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run recordio_events -- -max_total_time=$${FUZZ_SECONDS:-60}
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run remote_requests -- -max_total_time=$${FUZZ_SECONDS:-60}

## Release: the executor and executorctl for x86_64 Linux with glibc 2.17 or
## later, optimised and stripped (`--version` prints version and git revision),
## with hooks.tar.gz, LICENSE, NOTICE, CHANGELOG.md and docs, and SHA-256
## checksums: dist/<name>/, dist/<name>.tar.gz (+ .sha256), and dist/latest/
## (the same files; what the Vagrant VM serves). Fails when a binary needs a
## glibc symbol version above $(GLIBC_FLOOR) (tests/it/glibc.rs reads the ELF).
release: release-tools
	$(CARGO) zigbuild --release --bins --target $(RELEASE_TARGET).$(GLIBC_FLOOR)
	RELEASE_BINARIES="$(RELEASE_DIR)/mesos-hook-executor $(RELEASE_DIR)/executorctl" GLIBC_CEILING=$(GLIBC_FLOOR) \
		$(CARGO) test --test it glibc:: -- --include-ignored --show-output --test-threads=2
	rm -rf $(DIST) dist/latest
	mkdir -p $(DIST)
	cp $(RELEASE_DIR)/mesos-hook-executor $(RELEASE_DIR)/executorctl $(DIST)/
	tar --sort=name --owner=0 --group=0 --numeric-owner --mode=go-w -czf $(DIST)/hooks.tar.gz hooks
	cp -R README.md CHANGELOG.md LICENSE NOTICE marathon-test-app.json docs $(DIST)/
	$(MAKE) --no-print-directory completions DEST=$(DIST)/completions CTL=$(DIST)/executorctl
	$(DIST)/mesos-hook-executor --version > $(DIST)/VERSION
	cd $(DIST) && sha256sum mesos-hook-executor executorctl hooks.tar.gz > SHA256SUMS
	tar --sort=name --owner=0 --group=0 --numeric-owner -C dist -czf $(DIST).tar.gz $(notdir $(DIST))
	cd dist && sha256sum $(notdir $(DIST)).tar.gz > $(notdir $(DIST)).tar.gz.sha256
	cp -R $(DIST) dist/latest
	@cat $(DIST)/VERSION $(DIST)/SHA256SUMS
	@ls -l $(DIST)/mesos-hook-executor $(DIST)/executorctl $(DIST).tar.gz

## cargo-zigbuild and zig (PyPI packages cargo-zigbuild and ziglang): installed
## with pip when missing, otherwise the run stops naming them.
release-tools:
	@command -v cargo-zigbuild >/dev/null 2>&1 && { command -v zig >/dev/null 2>&1 || python3 -m ziglang version >/dev/null 2>&1; } || \
		{ echo "release: installing cargo-zigbuild and ziglang with pip"; python3 -m pip install --quiet cargo-zigbuild ziglang; } || \
		{ echo "release: needs cargo-zigbuild and zig: pip install cargo-zigbuild ziglang" >&2; exit 1; }
	@command -v cargo-zigbuild >/dev/null 2>&1 || { echo "release: cargo-zigbuild is not on PATH after pip install (add pip's bin directory to PATH)" >&2; exit 1; }

## executorctl's shell completions (bash, zsh, fish) and man pages, generated
## from its clap definition, into DEST (man pages in DEST/man1):
## `make completions DEST=dir`. CTL is the executorctl to run (default: a
## debug build; the output is the same).
DEST ?= dist/completions
CTL ?= $(CARGO) run --quiet --bin executorctl --
completions:
	mkdir -p $(DEST)
	$(CTL) completions bash > $(DEST)/executorctl.bash
	$(CTL) completions zsh > $(DEST)/_executorctl
	$(CTL) completions fish > $(DEST)/executorctl.fish
	mkdir -p $(DEST)/man1
	$(CTL) man --dir $(DEST)/man1

## A VM with Mesos, Marathon, ZooKeeper and Consul serving dist/latest at
## http://192.168.56.10/ (vagrant/README.md); then `make vagrant-deploy`.
vagrant-up: release
	cd vagrant && vagrant up

## Push dist/latest to the VM and deploy APP (a path in the repository) to its
## Marathon, waiting until the task runs under the executor.
APP ?= marathon-test-app.json
vagrant-deploy: release
	cd vagrant && vagrant rsync && vagrant ssh -c 'sudo bash /vagrant/vagrant/deploy.sh /vagrant/$(APP)'

vagrant-destroy:
	cd vagrant && vagrant destroy -f

clean:
	$(CARGO) clean
	rm -rf dist
