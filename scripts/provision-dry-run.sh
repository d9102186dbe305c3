#!/usr/bin/env bash
# Dry run of vagrant/provision.sh on this machine: runs it twice, as root, in a
# private mount namespace where /etc, /opt, /var and /usr/lib are overlays (so
# nothing it writes reaches the real system), with apt-get, dpkg-query,
# apt-cache, systemctl, curl, docker, tar, consul and the Mesos binaries
# replaced by stubs, and the service ports (2181, 5050, 5051, 8080, 8500, 80)
# answered by a local listener on 127.0.0.1. It checks that the first run
# configures everything and exits 0, and that the second run changes nothing
# (no install, download, file write or restart): provisioning is idempotent.
# Both Marathon sources and both Mesos install paths are exercised.
#
# What it cannot show: that the real packages install and the services run
# (see vagrant/README.md). Skipped, with a message, when not root or when
# unshare, overlayfs, python3 or the ports are unavailable.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

# A skip is said, and listed in make test's summary (scripts/run-tests.sh).
skip() {
    echo "provision-dry-run: skipped: $*"
    if [ -n "${TEST_SUMMARY_DIR:-}" ]; then echo "provision dry run (scripts/provision-dry-run.sh): $*" >>"$TEST_SUMMARY_DIR/skipped"; fi
    exit 0
}
[ "$(id -u)" = 0 ] || skip "needs root (mount namespace and overlays)"
if ! command -v unshare >/dev/null || ! command -v python3 >/dev/null; then skip "needs unshare and python3"; fi
for port in 80 2181 5050 5051 8080 8500; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then skip "port $port is in use"; fi
done

work=$(mktemp -d)
listener=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    [ -z "$listener" ] || kill "$listener" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
export STATE="$work/state"
mkdir -p "$work/stubs" "$STATE" "$work/serve"
touch "$work/serve/mesos-hook-executor" "$work/serve/hooks.tar.gz"

stub() { cat >"$work/stubs/$1"; chmod +x "$work/stubs/$1"; }
stub apt-get <<'EOF'
#!/bin/bash
echo "apt-get $*" >>"$STATE/calls"
[[ " $* " == *" install "* ]] || exit 0
for a in "$@"; do
    case "$a" in -* | install) continue ;; esac
    pkg=${a%%=*} ver=${a#*=}
    [ "$ver" != "$a" ] || ver=1.0
    case "$pkg" in /*) pkg=aventer-mesos ver=${MESOS_VERSION:-1.11.0-0.7.1.ubuntu2404} ;; esac
    echo "$pkg $ver" >>"$STATE/packages"
    case "$pkg" in
    zookeeperd) mkdir -p /etc/zookeeper/conf && printf 'tickTime=2000\nclientPort=2181\n' >/etc/zookeeper/conf/zoo.cfg ;;
    consul) mkdir -p /etc/consul.d && echo 'data_dir = "/opt/consul"' >/etc/consul.d/consul.hcl ;;
    esac
done
EOF
stub dpkg-query <<'EOF'
#!/bin/bash
line=$(grep "^$3 " "$STATE/packages" 2>/dev/null) || exit 1
line=${line##*$'\n'}
case "$2" in *Status*) printf 'install ok installed' ;; *) printf '%s' "${line#* }" ;; esac
EOF
stub systemctl <<'EOF'
#!/bin/bash
echo "systemctl $*" >>"$STATE/calls"
args=()
for a in "$@"; do case "$a" in -q | --now) ;; *) args+=("$a") ;; esac; done
case "${args[0]}" in
is-active) grep -qx "${args[1]}" "$STATE/active" 2>/dev/null ;;
start | restart | enable) echo "${args[1]:-}" >>"$STATE/active" ;;
cat) exit 1 ;;
esac
exit_code=$?
exit "$exit_code"
EOF
stub curl <<'EOF'
#!/bin/bash
echo "curl $*" >>"$STATE/calls"
while [ $# -gt 0 ]; do
    if [ "$1" = -o ]; then echo "stub download" >"$2"; fi
    shift
done
EOF
stub docker <<'EOF'
#!/bin/bash
echo "docker $*" >>"$STATE/calls"
case "$1 $2" in "image inspect") [ -f "$STATE/image" ] ;; pull*) touch "$STATE/image" ;; esac
EOF
stub tar <<'EOF'
#!/bin/bash
echo "tar $*" >>"$STATE/calls"
mkdir -p /opt/marathon/bin
EOF
for name in apt-cache consul mesos-master mesos-agent; do
    printf '#!/bin/sh\nexit 0\n' | stub "$name"
done

python3 - <<'EOF' &
import socket, threading, time
def serve(s):
    while True:
        c, _ = s.accept()
        c.close()
for port in (80, 2181, 5050, 5051, 8080, 8500):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(16)
    threading.Thread(target=serve, args=(s,), daemon=True).start()
time.sleep(60)
EOF
listener=$!
for _ in $(seq 50); do
    (exec 3<>/dev/tcp/127.0.0.1/8500) 2>/dev/null && break
    sleep 0.1
done

sum=$(printf 'stub download\n' | sha256sum | cut -d' ' -f1)
failed=0
for variant in "MARATHON_SOURCE=docker" "MARATHON_SOURCE=tarball MARATHON_TARBALL_SHA256=$sum MESOS_DEB_SHA256=$sum"; do
    read -r -a settings <<<"$variant"
    rm -rf "${STATE:?}"/* "$work/ov"
    for d in etc opt var lib; do mkdir -p "$work/ov/$d-up" "$work/ov/$d-work"; done
    # shellcheck disable=SC2016 # expanded by the inner bash
    if ! unshare -m --propagation private env PATH="$work/stubs:$PATH" VM_IP=127.0.0.1 SERVE_DIR="$work/serve" \
        "${settings[@]}" bash -c '
        set -e
        for d in etc:/etc opt:/opt var:/var lib:/usr/lib; do
            mount -t overlay overlay -o "lowerdir=${d#*:},upperdir=$0/ov/${d%%:*}-up,workdir=$0/ov/${d%%:*}-work" "${d#*:}"
        done
        touch /usr/lib/libmesos.so
        bash "$1/vagrant/provision.sh" >"$0/run1.log" 2>&1 || { echo "first run failed"; exit 1; }
        bash "$1/vagrant/provision.sh" >"$0/run2.log" 2>&1 || { echo "second run failed"; exit 1; }
        for f in /etc/systemd/system/mhe-mesos-master.service /etc/systemd/system/mhe-mesos-agent.service \
            /etc/systemd/system/mhe-marathon.service /etc/systemd/system/mhe-artifacts.service /etc/consul.d/consul.hcl; do
            [ -s "$f" ] || { echo "missing $f"; exit 1; }
        done
        grep -qx "admin.enableServer=false" /etc/zookeeper/conf/zoo.cfg || { echo "ZooKeeper AdminServer not disabled"; exit 1; }
        ' "$work" "$repo" >"$work/outer.log" 2>&1; then
        if [ ! -e "$work/run1.log" ]; then
            skip "no private mount namespace with overlays here: $(tr '\n' ' ' <"$work/outer.log")"
        fi
        echo "provision-dry-run: FAILED ($variant): $(cat "$work/outer.log"); the runs' output:" >&2
        cat "$work/run1.log" >&2 2>/dev/null || true
        cat "$work/run2.log" >&2 2>/dev/null || true
        failed=1
        continue
    fi
    if grep -E '^==> (installing|wrote|restarting|starting|downloading|pulling|masking)' "$work/run2.log"; then
        echo "provision-dry-run: FAILED ($variant): the second run changed something (above)" >&2
        failed=1
    else
        echo "provision-dry-run: ok ($variant): $(grep -c '^==> ' "$work/run1.log") steps reported on the first run, nothing changed on the second"
    fi
done
exit "$failed"
