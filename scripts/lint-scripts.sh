#!/usr/bin/env bash
# Static checks of the repository's scripts, run by `make test` before the
# cargo tests:
#   * bash scripts (vagrant/*.sh, scripts/*.sh, .ci/run): bash -n and shellcheck -x
#   * hook scripts (hooks/*/*, POSIX sh): sh -n and shellcheck -x
#   * vagrant/Vagrantfile: ruby -c and an evaluation against a stub of Vagrant's
#     API, when Ruby is installed
#   * vagrant/provision.sh: idempotence, by scripts/provision-dry-run.sh (root only)
# Shellcheck runs at its default (strictest) severity. A missing shellcheck or
# ruby fails the run (never a quiet skip): `make test` installs both first as
# root (scripts/require-tools.sh, scripts/test-tools.txt) or stops naming them.
set -euo pipefail
cd "$(dirname "$0")/.."

checks=0
failed=0
check() {
    checks=$((checks + 1))
    if ! "$@"; then
        failed=$((failed + 1))
        echo "lint-scripts: FAILED: $*" >&2
    fi
}

bash_scripts=(vagrant/*.sh scripts/*.sh .ci/run)
hook_scripts=()
for f in hooks/*/*; do
    [ -f "$f" ] && hook_scripts+=("$f")
done

for f in "${bash_scripts[@]}"; do
    check bash -n "$f"
done
for f in "${hook_scripts[@]}"; do
    check sh -n "$f"
done

# A required tool that is missing counts as a failed check.
missing() {
    echo "lint-scripts: FAILED: $1 is not installed (apt-get install $2, or run make test as root)" >&2
    checks=$((checks + 1))
    failed=$((failed + 1))
}

if command -v shellcheck >/dev/null 2>&1; then
    check shellcheck -x "${bash_scripts[@]}" "${hook_scripts[@]}"
else
    missing shellcheck shellcheck
fi

# Evaluates the Vagrantfile against a stub of Vagrant's configuration API, so
# that errors past the syntax (a bad Integer(), a typo'd constant) show here.
vagrantfile_runs() {
    ruby - vagrant/Vagrantfile <<'RUBY'
class Recorder
  def method_missing(_name, *_args, **_kw)
    yield Recorder.new if block_given?
    Recorder.new
  end

  def respond_to_missing?(*) = true
end

module Vagrant
  def self.configure(version)
    raise "unexpected configuration version #{version}" unless version == "2"

    yield Recorder.new
  end
end

load ARGV.fetch(0)
RUBY
}

if command -v ruby >/dev/null 2>&1; then
    check ruby -c vagrant/Vagrantfile >/dev/null
    check vagrantfile_runs
else
    missing ruby ruby
fi

# vagrant/provision.sh run twice against stubs: the second run must change nothing.
check bash scripts/provision-dry-run.sh

echo "lint-scripts: ${#bash_scripts[@]} bash and ${#hook_scripts[@]} hook scripts, $checks checks, $failed failed"
[ "$failed" = 0 ]
