#!/usr/bin/env bash
# Stop the daemons scripts/slurm/start.sh started, by the pids it recorded, and nothing else.
#
# Jobs still queued on that cluster are cancelled first so no job step outlives it. Safe to run
# when nothing is running (it says so and exits 0).
#
# Environment: TRAINSET_SLURM_STATE  state directory (default /tmp/trainset-slurm)
set -euo pipefail

STATE="${TRAINSET_SLURM_STATE:-/tmp/trainset-slurm}"

say() { echo "slurm/stop: $*"; }

recorded_pid() {  # recorded_pid NAME -> the pid when $STATE/NAME.pid names a live NAME process
    local name=$1 pid
    [ -s "$STATE/$name.pid" ] || return 1
    pid=$(cat "$STATE/$name.pid")
    [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$name" ] && echo "$pid"
}

if recorded_pid slurmctld >/dev/null && scontrol ping >/dev/null 2>&1; then
    jobs=$(squeue -h -o '%A' 2>/dev/null | sort -u | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
        say "cancelling jobs still on this cluster: $jobs"
        # shellcheck disable=SC2086
        scancel $jobs || true
        for _ in $(seq 100); do
            [ -z "$(squeue -h -o '%A' 2>/dev/null)" ] && break
            sleep 0.1
        done
    fi
fi

stopped=0
for name in slurmd slurmctld munged; do
    if pid=$(recorded_pid "$name"); then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            [ -d "/proc/$pid" ] || break
            sleep 0.1
        done
        if [ -d "/proc/$pid" ]; then
            say "$name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        say "$name stopped (pid $pid)"
        stopped=$((stopped + 1))
    fi
    rm -f "$STATE/$name.pid"
done
[ "$stopped" -gt 0 ] || say "no daemon started by scripts/slurm/start.sh is running; nothing to do"
exit 0
