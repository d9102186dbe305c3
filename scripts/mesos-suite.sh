#!/usr/bin/env bash
# Runs the real-Mesos suite (tests/mesos/, docs/real-mesos.md): the executor
# under a real Apache Mesos master and agent.
#
#   scripts/mesos-suite.sh             run it; no Mesos found is an error (make test-mesos)
#   scripts/mesos-suite.sh --if-found  run it if a Mesos is found, else say plainly
#                                      that it did not run and why (make test)
#
# The Mesos: $MESOS_HOME, else <repository>/../shared/mesos, else
# /work/shared/mesos (where this project's machines keep it). Either may be an
# install directory (bin/mesos-master, libexec/mesos/) or the bundle directory
# with the mesos-local script, whose --home unpacks it (as root it also installs
# the runtime libraries). The last line printed is the suite's one-line result;
# it is also written, after one line per scenario, to mesos.txt in
# $TEST_SUMMARY_DIR (scripts/run-tests.sh), else target/test-summary/; a skip is
# also appended to $TEST_SUMMARY_DIR/skipped.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
repo=$(pwd)
cargo=${CARGO:-cargo}
if_found=false
[ "${1:-}" = "--if-found" ] && if_found=true

summary=${TEST_SUMMARY_DIR:-${CARGO_TARGET_DIR:-target}/test-summary}/mesos.txt
scenario_lines=""

# Prints the result line last and records it (after the scenario lines).
finish() {
    local line=$1 code=$2
    mkdir -p "$(dirname "$summary")"
    { [ -z "$scenario_lines" ] || printf '%s\n' "$scenario_lines"; printf '%s\n' "$line"; } > "$summary"
    echo "$line"
    exit "$code"
}

if [ -n "${MESOS_HOME:-}" ]; then
    source_dir=$MESOS_HOME origin="MESOS_HOME=$MESOS_HOME"
elif [ -d "$repo/../shared/mesos" ]; then
    source_dir=$(cd "$repo/../shared/mesos" && pwd) origin="$source_dir (../shared/mesos)"
elif [ -d /work/shared/mesos ]; then
    source_dir=/work/shared/mesos origin="/work/shared/mesos"
elif $if_found; then
    [ -z "${TEST_SUMMARY_DIR:-}" ] || echo "real-Mesos suite: no Mesos found (set MESOS_HOME, or put the Mesos bundle at ../shared/mesos next to the repository)" >> "$TEST_SUMMARY_DIR/skipped"
    finish "real-Mesos suite: SKIPPED (no Mesos found: set MESOS_HOME, or put the Mesos bundle at ../shared/mesos next to the repository)" 0
else
    finish "real-Mesos suite: FAILED (no Mesos found: set MESOS_HOME, or put the Mesos bundle at ../shared/mesos next to the repository)" 1
fi

if [ -x "$source_dir/bin/mesos-master" ]; then
    home=$source_dir
elif [ -x "$source_dir/mesos-local" ]; then
    home=$("$source_dir/mesos-local" --home | tail -n 1) \
        || finish "real-Mesos suite: FAILED ($source_dir/mesos-local --home failed; see above)" 1
else
    finish "real-Mesos suite: FAILED ($origin holds neither bin/mesos-master nor mesos-local)" 1
fi

# The agent's helpers need more than libmesos (mesos-local checks only that):
# the fetcher links libarchive. Install what is missing as root, else name it.
missing=$(for f in "$home"/bin/* "$home"/libexec/mesos/*; do ldd "$f" 2>/dev/null | awk '/not found/ {print $1}'; done | sort -u)
if [ -n "$missing" ]; then
    pkgs=$(for lib in $missing; do
        case "$lib" in
            libarchive.so.*) echo libarchive13 ;;
            *) echo "?$lib" ;;
        esac
    done | sort -u | tr '\n' ' ')
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null && [[ "$pkgs" != *"?"* ]]; then
        echo "mesos-suite: installing $pkgs(libraries of the Mesos helpers)"
        # shellcheck disable=SC2086 # one word per package
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs >/dev/null; } \
            || finish "real-Mesos suite: FAILED (apt-get install $pkgs failed)" 1
    else
        finish "real-Mesos suite: FAILED (Mesos helpers miss libraries: $(echo "$missing" | tr '\n' ' ')— install: $pkgs)" 1
    fi
fi

echo "mesos-suite: Mesos from $home ($origin)"
log=$(mktemp)
# The suite's own result line is printed once, last, by finish.
MESOS_HOME=$home "$cargo" test --test mesos 2>&1 | tee "$log" | grep -Ev '^real-Mesos suite: (PASSED|FAILED)'
status=${PIPESTATUS[0]}
scenario_lines=$(grep -E '^  (ok|FAILED) ' "$log")
result=$(grep -E '^real-Mesos suite: (PASSED|FAILED)' "$log" | tail -n 1)
rm -f "$log"
[ -n "$result" ] || result="real-Mesos suite: FAILED (the suite did not finish; exit status $status)"
[ "$status" -eq 0 ] || [[ "$result" == *FAILED* ]] || result="real-Mesos suite: FAILED (exit status $status)"
finish "$result" "$status"
