#!/usr/bin/env bash
# Makes sure every tool in scripts/test-tools.txt is on PATH before the tests
# run: as root with apt-get, missing packages are installed; otherwise the run
# stops and names the packages to install.
set -euo pipefail
cd "$(dirname "$0")/.."
missing_cmds=()
missing_pkgs=()
while read -r cmd pkg; do
    case "$cmd" in '' | '#'*) continue ;; esac
    if ! command -v "$cmd" >/dev/null 2>&1; then
        missing_cmds+=("$cmd")
        missing_pkgs+=("$pkg")
    fi
done < scripts/test-tools.txt
[ "${#missing_pkgs[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "require-tools: installing ${missing_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}" >/dev/null
    for cmd in "${missing_cmds[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || { echo "require-tools: $cmd still missing after installing its package" >&2; exit 1; }
    done
    exit 0
fi
echo "require-tools: missing ${missing_cmds[*]}; install the Debian packages: ${missing_pkgs[*]} (make test installs them itself when run as root)" >&2
exit 1
