#!/usr/bin/env bash
# Provisions the mesos-hook-executor demo VM (Ubuntu 24.04): ZooKeeper, a Mesos
# master and agent, Marathon, a single-node Consul agent, and an HTTP server
# that serves the repository's dist/latest/ (made by `make release` on the
# host) at http://$VM_IP/, the fetch URIs of marathon-test-app.json.
#
# Run as root by `vagrant up` / `vagrant provision`. Idempotent: every step
# checks the current state first, files are only rewritten when their content
# changes, and a service is only restarted when its configuration changed.
# Package sources and pinned versions are explained in vagrant/README.md; each
# can be overridden from the host's environment (see the Vagrantfile).
set -euo pipefail

VM_IP=${VM_IP:-192.168.56.10}
SERVE_DIR=${SERVE_DIR:-/vagrant/dist/latest}
CONF_DIR=/etc/mesos-hook-executor-vm

# Apache Mesos 1.11.0 as packaged by AVENTER UG for Ubuntu 24.04 ("noble").
MESOS_REPO=${MESOS_REPO:-https://rpm.aventer.biz/Ubuntu/noble}
MESOS_SUITE=${MESOS_SUITE:-noble}
MESOS_KEY_URL=${MESOS_KEY_URL:-https://www.aventer.biz/assets/support_aventer.asc}
MESOS_PACKAGE=${MESOS_PACKAGE:-aventer-mesos}
MESOS_VERSION=${MESOS_VERSION:-1.11.0-0.7.1.ubuntu2404}
# Optional: install the .deb straight from the repository's pool, checked
# against this SHA-256, instead of through apt (e.g. if the repository's
# signing key has expired).
MESOS_DEB_SHA256=${MESOS_DEB_SHA256:-}

# Marathon 1.11.24 (the last build of Marathon's master branch).
MARATHON_SOURCE=${MARATHON_SOURCE:-docker}
MARATHON_IMAGE=${MARATHON_IMAGE:-mesosphere/marathon:v1.11.24}
MARATHON_TARBALL_URL=${MARATHON_TARBALL_URL:-https://downloads.mesosphere.io/marathon/builds/1.11.24-9ee9f3ceb/marathon-1.11.24-9ee9f3ceb.tgz}
MARATHON_TARBALL_SHA256=${MARATHON_TARBALL_SHA256:-}

# Consul from HashiCorp's apt repository.
CONSUL_REPO=${CONSUL_REPO:-https://apt.releases.hashicorp.com}
CONSUL_KEY_URL=${CONSUL_KEY_URL:-https://apt.releases.hashicorp.com/gpg}
CONSUL_VERSION=${CONSUL_VERSION:-1.19.2-1}

export DEBIAN_FRONTEND=noninteractive

log() { printf '==> %s\n' "$*"; }
die() { printf 'provision: error: %s\n' "$*" >&2; exit 1; }

# write_file PATH MODE < content: installs the content at PATH unless it is
# already there; returns 0 when the file changed, 1 when it did not.
write_file() {
    local path=$1 mode=$2 tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if [ -f "$path" ] && cmp -s "$tmp" "$path"; then
        rm -f "$tmp"
        return 1
    fi
    install -D -m "$mode" "$tmp" "$path"
    rm -f "$tmp"
    log "wrote $path"
    return 0
}

apt_updated=0
apt_update() {
    if [ "$apt_updated" = 0 ]; then
        apt-get update -qq
        apt_updated=1
    fi
}
# Forces the next apt_update to run (after a source was added).
apt_sources_changed() { apt_updated=0; }

installed_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }

apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        if [ "$(dpkg-query -W -f='${Status}' "${pkg%%=*}" 2>/dev/null || true)" != "install ok installed" ] ||
            { [ "$pkg" != "${pkg%%=*}" ] && [ "$(installed_version "${pkg%%=*}")" != "${pkg#*=}" ]; }; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_update
        log "installing ${missing[*]}"
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

# fetch_checked URL SHA256 DEST: downloads URL to DEST once, checking SHA256.
fetch_checked() {
    local url=$1 sum=$2 dest=$3
    if [ -f "$dest" ] && echo "$sum  $dest" | sha256sum -c --status; then
        return 0
    fi
    log "downloading $url"
    curl -fsSL --retry 3 -o "$dest.part" "$url"
    echo "$sum  $dest.part" | sha256sum -c --status || die "checksum mismatch for $url (expected $sum)"
    mv "$dest.part" "$dest"
}

# restart_if UNIT CHANGED: enables UNIT, restarts it when CHANGED is 1,
# otherwise starts it if it is not running.
restart_if() {
    local unit=$1 changed=$2
    systemctl enable -q "$unit"
    if [ "$changed" = 1 ]; then
        log "restarting $unit"
        systemctl restart "$unit"
    elif ! systemctl is-active -q "$unit"; then
        log "starting $unit"
        systemctl start "$unit"
    fi
}

wait_for_port() {
    local host=$1 port=$2 what=$3 tries=${4:-60}
    while ! (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; do
        tries=$((tries - 1))
        [ "$tries" -gt 0 ] || die "$what did not open $host:$port in time (journalctl -u for details)"
        sleep 2
    done
    log "$what is listening on $host:$port"
}

[ "$(id -u)" = 0 ] || die "run as root"
# shellcheck source=/dev/null
. /etc/os-release
[ "${VERSION_CODENAME:-}" = "$MESOS_SUITE" ] ||
    log "warning: this is ${PRETTY_NAME:-an unknown OS}; the pinned Mesos package is for Ubuntu $MESOS_SUITE"

# --- base packages ------------------------------------------------------------
apt_install ca-certificates curl jq python3 gnupg

# --- ZooKeeper (Ubuntu's package) ---------------------------------------------
apt_install zookeeperd
zk_changed=0
zoo_cfg=/etc/zookeeper/conf/zoo.cfg
# ZooKeeper's AdminServer would take port 8080, Marathon's.
if ! grep -qx 'admin.enableServer=false' "$zoo_cfg"; then
    echo 'admin.enableServer=false' >>"$zoo_cfg"
    zk_changed=1
fi
restart_if zookeeper "$zk_changed"
wait_for_port 127.0.0.1 2181 ZooKeeper

# --- Mesos (AVENTER UG's Ubuntu package) -------------------------------------
# Only aventer-mesos comes from that repository; everything else it also
# carries (e.g. its own zookeeper) stays at Ubuntu's version.
write_file /etc/apt/preferences.d/aventer-mesos 0644 <<EOF || true
Package: *
Pin: origin "$(echo "$MESOS_REPO" | sed -E 's#^[a-z]+://([^/]+).*#\1#')"
Pin-Priority: 100

Package: $MESOS_PACKAGE
Pin: origin "$(echo "$MESOS_REPO" | sed -E 's#^[a-z]+://([^/]+).*#\1#')"
Pin-Priority: 500
EOF
if [ "$(installed_version "$MESOS_PACKAGE")" != "$MESOS_VERSION" ]; then
    if [ -n "$MESOS_DEB_SHA256" ]; then
        deb_name="${MESOS_PACKAGE}_${MESOS_VERSION}_$(dpkg --print-architecture).deb"
        mkdir -p /var/cache/mesos-hook-executor-vm
        fetch_checked "$MESOS_REPO/pool/main/${MESOS_PACKAGE:0:1}/$MESOS_PACKAGE/$deb_name" "$MESOS_DEB_SHA256" \
            "/var/cache/mesos-hook-executor-vm/$deb_name"
        apt_update
        apt-get install -y -qq "/var/cache/mesos-hook-executor-vm/$deb_name"
    else
        if [ ! -s /etc/apt/keyrings/aventer.asc ]; then
            install -d -m 0755 /etc/apt/keyrings
            curl -fsSL --retry 3 -o /etc/apt/keyrings/aventer.asc "$MESOS_KEY_URL"
        fi
        if write_file /etc/apt/sources.list.d/aventer-mesos.list 0644 <<EOF; then apt_sources_changed; fi
deb [signed-by=/etc/apt/keyrings/aventer.asc] $MESOS_REPO $MESOS_SUITE main
EOF
        apt_update
        apt-get install -y -qq "$MESOS_PACKAGE=$MESOS_VERSION" || {
            apt-cache madison "$MESOS_PACKAGE" >&2 || true
            die "cannot install $MESOS_PACKAGE=$MESOS_VERSION (versions available are listed above; set MESOS_VERSION, or MESOS_DEB_SHA256 to bypass apt)"
        }
    fi
fi
master_bin=$(command -v mesos-master) || die "mesos-master not found after installing $MESOS_PACKAGE"
agent_bin=$(command -v mesos-agent || command -v mesos-slave) || die "mesos-agent not found after installing $MESOS_PACKAGE"

# The package's own units read its own config layout; ours are explicit.
for unit in mesos-master mesos-agent mesos-slave; do
    if systemctl cat "$unit.service" >/dev/null 2>&1 && [ "$(systemctl is-enabled "$unit.service" 2>/dev/null || true)" != masked ]; then
        log "masking the package's $unit.service (replaced by mhe-$unit.service)"
        systemctl disable --now -q "$unit.service" || true
        systemctl mask -q "$unit.service"
    fi
done

master_changed=0
write_file "$CONF_DIR/mesos-master.env" 0644 <<EOF && master_changed=1
MESOS_ZK=zk://127.0.0.1:2181/mesos
MESOS_QUORUM=1
MESOS_IP=$VM_IP
MESOS_HOSTNAME=$VM_IP
MESOS_PORT=5050
MESOS_CLUSTER=mesos-hook-executor-vagrant
MESOS_WORK_DIR=/var/lib/mesos/master
MESOS_LOG_DIR=/var/log/mesos
EOF
write_file /etc/systemd/system/mhe-mesos-master.service 0644 <<EOF && master_changed=1
[Unit]
Description=Mesos master (mesos-hook-executor VM)
After=network-online.target zookeeper.service
Wants=network-online.target

[Service]
EnvironmentFile=$CONF_DIR/mesos-master.env
ExecStart=$master_bin
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
EOF

agent_changed=0
# Executors are custom (Marathon's `executor` field), run without user
# switching; checkpointing is Marathon's default, so executors survive an
# agent restart (KillMode=process keeps them out of the unit's stop).
write_file "$CONF_DIR/mesos-agent.env" 0644 <<EOF && agent_changed=1
MESOS_MASTER=zk://127.0.0.1:2181/mesos
MESOS_IP=$VM_IP
MESOS_HOSTNAME=$VM_IP
MESOS_HOSTNAME_LOOKUP=false
MESOS_PORT=5051
MESOS_WORK_DIR=/var/lib/mesos/agent
MESOS_LOG_DIR=/var/log/mesos
MESOS_CONTAINERIZERS=mesos
MESOS_LAUNCHER=posix
MESOS_ISOLATION=posix/cpu,posix/mem
MESOS_SYSTEMD_ENABLE_SUPPORT=false
MESOS_SWITCH_USER=false
MESOS_EXECUTOR_REGISTRATION_TIMEOUT=2mins
EOF
write_file /etc/systemd/system/mhe-mesos-agent.service 0644 <<EOF && agent_changed=1
[Unit]
Description=Mesos agent (mesos-hook-executor VM)
After=network-online.target mhe-mesos-master.service
Wants=network-online.target

[Service]
EnvironmentFile=$CONF_DIR/mesos-agent.env
ExecStart=$agent_bin
KillMode=process
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
EOF
systemctl daemon-reload
restart_if mhe-mesos-master "$master_changed"
wait_for_port "$VM_IP" 5050 "Mesos master"
restart_if mhe-mesos-agent "$agent_changed"
wait_for_port "$VM_IP" 5051 "Mesos agent"

# --- Marathon -----------------------------------------------------------------
# Tasks run as root (the agent does not switch users); task_killing gives
# Marathon the TASK_KILLING_STATE capability, so kills show TASK_KILLING.
marathon_changed=0
write_file "$CONF_DIR/marathon.env" 0644 <<EOF && marathon_changed=1
MARATHON_MASTER=zk://127.0.0.1:2181/mesos
MARATHON_ZK=zk://127.0.0.1:2181/marathon
MARATHON_HOSTNAME=$VM_IP
MARATHON_HTTP_PORT=8080
MARATHON_MESOS_USER=root
MARATHON_ENABLE_FEATURES=task_killing
LIBPROCESS_IP=$VM_IP
EOF
case "$MARATHON_SOURCE" in
docker)
    apt_install docker.io
    systemctl enable -q --now docker
    if ! docker image inspect "$MARATHON_IMAGE" >/dev/null 2>&1; then
        log "pulling $MARATHON_IMAGE"
        docker pull -q "$MARATHON_IMAGE"
    fi
    marathon_exec="/usr/bin/docker run --rm --name mhe-marathon --net=host --env-file $CONF_DIR/marathon.env $MARATHON_IMAGE"
    marathon_extra="ExecStartPre=-/usr/bin/docker rm -f mhe-marathon"
    marathon_deps="docker.service"
    ;;
tarball)
    [ -n "$MARATHON_TARBALL_SHA256" ] || die "MARATHON_SOURCE=tarball needs MARATHON_TARBALL_SHA256"
    java_pkg=openjdk-8-jre-headless
    apt_update
    apt-cache show "$java_pkg" >/dev/null 2>&1 || java_pkg=openjdk-11-jre-headless
    apt_install "$java_pkg"
    mkdir -p /var/cache/mesos-hook-executor-vm
    tarball=/var/cache/mesos-hook-executor-vm/$(basename "$MARATHON_TARBALL_URL")
    fetch_checked "$MARATHON_TARBALL_URL" "$MARATHON_TARBALL_SHA256" "$tarball"
    if [ "$(cat /opt/marathon/.source 2>/dev/null || true)" != "$MARATHON_TARBALL_SHA256" ]; then
        rm -rf /opt/marathon
        mkdir -p /opt/marathon
        tar -xzf "$tarball" -C /opt/marathon --strip-components=1
        echo "$MARATHON_TARBALL_SHA256" >/opt/marathon/.source
        marathon_changed=1
    fi
    libmesos=$(find /usr/lib /usr/local/lib -maxdepth 2 -name 'libmesos.so' -print -quit)
    [ -n "$libmesos" ] || die "libmesos.so not found (needed by the Marathon tarball)"
    write_file "$CONF_DIR/marathon-native.env" 0644 <<EOF && marathon_changed=1
MESOS_NATIVE_JAVA_LIBRARY=$libmesos
EOF
    marathon_exec="/opt/marathon/bin/marathon"
    marathon_extra="EnvironmentFile=$CONF_DIR/marathon-native.env"
    marathon_deps="mhe-mesos-master.service"
    ;;
*) die "MARATHON_SOURCE must be docker or tarball, not $MARATHON_SOURCE" ;;
esac
write_file /etc/systemd/system/mhe-marathon.service 0644 <<EOF && marathon_changed=1
[Unit]
Description=Marathon (mesos-hook-executor VM)
After=network-online.target zookeeper.service $marathon_deps
Wants=network-online.target
Requires=$marathon_deps

[Service]
EnvironmentFile=$CONF_DIR/marathon.env
$marathon_extra
ExecStart=$marathon_exec
Restart=always
RestartSec=10

[Install]
WantedBy=multi-user.target
EOF
systemctl daemon-reload
restart_if mhe-marathon "$marathon_changed"

# --- Consul (HashiCorp's apt repository), one node, server mode --------------
if [ "$(installed_version consul)" != "$CONSUL_VERSION" ]; then
    if [ ! -s /etc/apt/keyrings/hashicorp.asc ]; then
        install -d -m 0755 /etc/apt/keyrings
        curl -fsSL --retry 3 -o /etc/apt/keyrings/hashicorp.asc "$CONSUL_KEY_URL"
    fi
    if write_file /etc/apt/sources.list.d/hashicorp.list 0644 <<EOF; then apt_sources_changed; fi
deb [signed-by=/etc/apt/keyrings/hashicorp.asc] $CONSUL_REPO ${VERSION_CODENAME:-noble} main
EOF
    apt_install "consul=$CONSUL_VERSION"
fi
consul_changed=0
write_file /etc/consul.d/consul.hcl 0644 <<EOF && consul_changed=1
datacenter       = "vagrant"
data_dir         = "/opt/consul"
server           = true
bootstrap_expect = 1
bind_addr        = "$VM_IP"
client_addr      = "127.0.0.1 $VM_IP"
ui_config {
  enabled = true
}
EOF
consul validate /etc/consul.d >/dev/null
restart_if consul "$consul_changed"
wait_for_port 127.0.0.1 8500 Consul

# --- the release artifacts, served at http://$VM_IP/ -----------------------------
artifacts_changed=0
write_file /etc/systemd/system/mhe-artifacts.service 0644 <<EOF && artifacts_changed=1
[Unit]
Description=mesos-hook-executor release artifacts ($SERVE_DIR) on port 80
After=network-online.target
Wants=network-online.target

[Service]
ExecStartPre=/bin/mkdir -p $SERVE_DIR
ExecStart=/usr/bin/python3 -m http.server 80 --bind 0.0.0.0 --directory $SERVE_DIR
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
EOF
systemctl daemon-reload
restart_if mhe-artifacts "$artifacts_changed"
wait_for_port 127.0.0.1 80 "artifact server"
# For apps whose `executor` is an absolute path instead of a fetched file
# (docs/marathon-batch-app.json): the served binary, installed in place.
install -d -m 0755 /opt/mesos-hook-executor
ln -sfn "$SERVE_DIR/mesos-hook-executor" /opt/mesos-hook-executor/mesos-hook-executor
for artifact in mesos-hook-executor hooks.tar.gz; do
    [ -f "$SERVE_DIR/$artifact" ] ||
        log "warning: $SERVE_DIR/$artifact is missing: run \`make release\` on the host, then \`make vagrant-deploy\`"
done

# Marathon takes a while to elect itself leader; wait for its API last.
wait_for_port "$VM_IP" 8080 Marathon 90
log "ready: Mesos http://$VM_IP:5050  Marathon http://$VM_IP:8080  Consul http://$VM_IP:8500  artifacts http://$VM_IP/"
