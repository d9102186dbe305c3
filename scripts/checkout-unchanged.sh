#!/usr/bin/env bash
# Runs a command (the test suite) and fails if it left the git checkout
# different from before: a test must write only into temporary directories,
# never into the repository. Build output under the ignored target/ does not
# count. Outside a git checkout the command just runs.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    exec "$@"
fi
snapshot() { git status --porcelain=v1 --untracked-files=all 2>/dev/null; }
before=$(snapshot)
"$@"
status=$?
after=$(snapshot)
if [ "$before" != "$after" ]; then
    echo "checkout-unchanged: the tests changed the checkout:" >&2
    diff <(printf '%s\n' "$before") <(printf '%s\n' "$after") >&2
    exit 1
fi
exit "$status"
