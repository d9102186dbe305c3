# mesos-hook-executor — every target needs only the Rust toolchain (vagrant-*
# also need Vagrant with VirtualBox or libvirt: see vagrant/README.md).
CARGO ?= cargo
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
REV := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
DIST := dist/mesos-hook-executor-$(VERSION)-$(REV)-linux-$(shell uname -m)

.PHONY: all build tools test demo bench fuzz release clean lint vagrant-up vagrant-deploy vagrant-destroy

all: build

build:
	$(CARGO) build --bins --examples

## The test suite: shell scripts and Vagrantfile (scripts/lint-scripts.sh),
## unit tests, the integration suite against the agent emulator, and the fuzz
## target's body over a generated corpus.
test: tools build lint
	bash scripts/lint-scripts.sh
	bash scripts/checkout-unchanged.sh $(CARGO) test --lib --tests -- --test-threads=2

## The real tools the tests run (scripts/test-tools.txt): installed with apt
## when run as root, otherwise the run stops naming the missing packages.
tools:
	bash scripts/require-tools.sh

## Lints: rustfmt (default width) and clippy on every target with warnings as
## errors (the allow-list, with reasons, is [lints.clippy] in Cargo.toml).
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

## The main job on one machine: the real executor against the local agent
## emulator, running marathon-test-app.json's task end to end.
demo:
	$(CARGO) build --release --bin mesos-hook-executor --bin executorctl --example demo --example task-helper
	./target/release/examples/demo

## Benchmarks (medians over many runs; see README "Benchmarks").
bench:
	$(CARGO) build --release --bin mesos-hook-executor --examples
	$(CARGO) bench --bench executor
	$(CARGO) bench --bench remote

## Coverage-guided fuzzing of bytes → RecordIO → Event and of remote API
## requests (method, target, body) through every parser (needs cargo-fuzz; the
## stable toolchain is told to accept the sanitizer flags).
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run recordio_events -- -max_total_time=$${FUZZ_SECONDS:-60}
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run remote_requests -- -max_total_time=$${FUZZ_SECONDS:-60}

## Optimised, stripped binaries (`--version` prints version and git revision),
## hooks.tar.gz and docs, with SHA-256 checksums: dist/<name>/, dist/<name>.tar.gz
## (+ .sha256), and dist/latest/ (the same files; what the Vagrant VM serves).
## The executor and executorctl, both stripped.
release:
	$(CARGO) build --release --bins
	rm -rf $(DIST) dist/latest
	mkdir -p $(DIST)
	cp target/release/mesos-hook-executor $(DIST)/
	cp target/release/executorctl $(DIST)/
	tar --sort=name --owner=0 --group=0 --numeric-owner -czf $(DIST)/hooks.tar.gz hooks
	cp -R README.md marathon-test-app.json docs $(DIST)/
	$(DIST)/mesos-hook-executor --version > $(DIST)/VERSION
	cd $(DIST) && sha256sum mesos-hook-executor executorctl hooks.tar.gz > SHA256SUMS
	tar -C dist -czf $(DIST).tar.gz $(notdir $(DIST))
	cd dist && sha256sum $(notdir $(DIST)).tar.gz > $(notdir $(DIST)).tar.gz.sha256
	cp -R $(DIST) dist/latest
	@cat $(DIST)/VERSION $(DIST)/SHA256SUMS
	@ls -l $(DIST)/mesos-hook-executor $(DIST).tar.gz

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
