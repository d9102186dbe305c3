#!/usr/bin/env bash
# The body of `make test` (after the tools, the build and `make lint`): the
# script checks (scripts/lint-scripts.sh), then every cargo test binary
# (unit and integration tests, in a checkout the tests must leave unchanged),
# then a closing summary:
#   * tests passed, failed and ignored, summed over every cargo test binary,
#     with each ignored test and its reason;
#   * the scripts checked;
#   * the real-Mesos suite's result line;
#   * every check that was skipped, with why.
# A check that cannot run here reports itself by appending one line,
# "<check>: <why>", to "$TEST_SUMMARY_DIR/skipped" (Rust tests through
# tests/it/helpers.rs report_skip; scripts with a plain echo). The directory is
# $CARGO_TARGET_DIR/test-summary (default target/test-summary), emptied at the
# start of each run. Exits non-zero when any part failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
cargo=${CARGO:-cargo}
dir=${CARGO_TARGET_DIR:-target}/test-summary
rm -rf "$dir"
mkdir -p "$dir"
TEST_SUMMARY_DIR=$(cd "$dir" && pwd)
export TEST_SUMMARY_DIR
touch "$dir/skipped"

status=0
bash scripts/lint-scripts.sh 2>&1 | tee "$dir/scripts.log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
bash scripts/checkout-unchanged.sh "$cargo" test --lib --tests -- --test-threads=2 2>&1 | tee "$dir/cargo.log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
# The real-Mesos suite (tests/mesos/) when a Mesos is found; otherwise it
# reports itself as skipped. Its "test result:" line joins the totals.
CARGO="$cargo" bash scripts/mesos-suite.sh --if-found 2>&1 | tee -a "$dir/cargo.log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

# Sums one field ("passed", "failed", "ignored") over every "test result:" line.
total() {
    sed -n "s/^test result: .* \([0-9][0-9]*\) $1;.*/\1/p" "$dir/cargo.log" | awk '{s += $1} END {print s + 0}'
}
binaries=$(grep -c '^test result:' "$dir/cargo.log")
echo
echo "== make test summary =="
echo "tests: $(total passed) passed, $(total failed) failed, $(total ignored) ignored, over $binaries test binaries"
grep -E '^test .* \.\.\. FAILED$' "$dir/cargo.log" | sed 's/^test \(.*\) \.\.\. FAILED$/  failed: \1/' | sort -u
grep -E '^test .* \.\.\. ignored' "$dir/cargo.log" | sed 's/^test \(.*\) \.\.\. ignored,* *\(.*\)$/  ignored: \1 (\2)/' | sort -u
grep -E '^lint-scripts: [0-9]+ bash' "$dir/scripts.log" | sed 's/^lint-scripts: /scripts: /' || echo "scripts: the script checks did not finish"
grep -E '^provision-dry-run: (ok|skipped)' "$dir/scripts.log" | sed -e 's/=[0-9a-f]\{64\}/=<sha256>/g' -e 's/^/  /'
[ -s "$dir/mesos.txt" ] && tail -n 1 "$dir/mesos.txt"
if [ -s "$dir/skipped" ]; then
    echo "skipped checks ($(wc -l <"$dir/skipped")):"
    sed 's/^/  /' "$dir/skipped"
else
    echo "skipped checks: none"
fi
if [ "$status" = 0 ]; then echo "make test: passed"; else echo "make test: FAILED"; fi
exit "$status"
