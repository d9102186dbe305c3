#!/usr/bin/env bash
# Deploys a Marathon app definition to the VM's Marathon and waits until its
# task runs under mesos-hook-executor, then shows where the task lives and the
# executor's log. Run inside the VM (`make vagrant-deploy` does it):
#
#   sudo bash /vagrant/vagrant/deploy.sh [APP_JSON]   # default: marathon-test-app.json
#
# Creating or replacing the app is one PUT, so running it again redeploys.
set -euo pipefail

app_file=${1:-/vagrant/marathon-test-app.json}
vm_ip=${VM_IP:-192.168.56.10}
marathon=${MARATHON_URL:-http://$vm_ip:8080}
artifacts=${ARTIFACTS_URL:-http://$vm_ip}
agent=${AGENT_URL:-http://$vm_ip:5051}
timeout=${DEPLOY_TIMEOUT:-240}

say() { printf '==> %s\n' "$*"; }
die() { printf 'deploy: error: %s\n' "$*" >&2; exit 1; }

command -v jq >/dev/null || die "jq is missing (run \`vagrant provision\`)"
[ -f "$app_file" ] || die "no app definition at $app_file"
app_id=$(jq -er '.id' "$app_file") || die "$app_file has no \"id\""
instances=$(jq -r '.instances // 1' "$app_file")

# 1. The artifacts the app fetches must be served, and match dist/latest.
while read -r uri; do
    case "$uri" in
    "$artifacts"/*)
        curl -fsS -o /dev/null "$uri" ||
            die "$uri is not served: run \`make release\` on the host, then \`make vagrant-deploy\` (it syncs dist/latest)"
        ;;
    esac
done < <(jq -r '.fetch[]?.uri' "$app_file")
if sums=$(curl -fsS "$artifacts/SHA256SUMS" 2>/dev/null); then
    say "serving $(curl -fsS "$artifacts/VERSION" 2>/dev/null || echo 'an unknown version'):"
    printf '%s\n' "$sums" | sed 's/^/    /'
fi

# 2. Marathon must be up (it needs a leader election after boot).
for _ in $(seq 60); do
    curl -fsS -o /dev/null "$marathon/ping" && break
    sleep 2
done
curl -fsS -o /dev/null "$marathon/ping" || die "Marathon does not answer at $marathon (systemctl status mhe-marathon)"

# 3. Create or replace the app; force cancels a deployment still in progress.
say "PUT $marathon/v2/apps$app_id ($app_file)"
curl -fsS -X PUT -H 'Content-Type: application/json' --data-binary "@$app_file" \
    "$marathon/v2/apps$app_id?force=true" | jq -c '{deploymentId, version}'

# 4. Wait for the task to run; report failures with Marathon's reason.
deadline=$((SECONDS + timeout))
last=""
while :; do
    app=$(curl -fsS "$marathon/v2/apps$app_id?embed=app.tasks&embed=app.lastTaskFailure")
    running=$(jq -r '.app.tasksRunning' <<<"$app")
    now=$(jq -r '[.app.tasks[]? | "\(.id) \(.state) healthy=\([.healthCheckResults[]?.alive] | if length == 0 then "unknown" else all end)"] | join("; ")' <<<"$app")
    failure=$(jq -r '.app.lastTaskFailure | if . then "\(.state) \(.message)" else "" end' <<<"$app")
    if [ "$now $failure" != "$last" ]; then
        say "tasks running: $running/$instances  ${now:-no task yet}"
        [ -z "$failure" ] || say "last task failure: $failure"
        last="$now $failure"
    fi
    [ "$running" -ge "$instances" ] && break
    [ "$SECONDS" -lt "$deadline" ] || die "no running task after ${timeout}s (Mesos UI: http://$vm_ip:5050)"
    sleep 3
done

# 5. Where it runs, and the executor's own log (the sandbox's stderr).
task_id=$(jq -r '.app.tasks[0].id' <<<"$app")
sandbox=$(curl -fsS "$agent/state" |
    jq -r --arg t "$task_id" '[.frameworks[].executors[] | select(any(.tasks[]?; .id == $t)) | .directory][0] // empty')
say "task $task_id runs under executor marathon-$task_id"
if [ -n "$sandbox" ] && [ -r "$sandbox/stderr" ]; then
    say "sandbox $sandbox; executor log (stderr), last lines:"
    tail -n 15 "$sandbox/stderr" | sed 's/^/    /'
else
    say "sandbox not readable here (run with sudo); see the Mesos UI: http://$vm_ip:5050"
fi
say "Marathon UI: http://$vm_ip:8080   Mesos UI: http://$vm_ip:5050   Consul UI: http://$vm_ip:8500"
