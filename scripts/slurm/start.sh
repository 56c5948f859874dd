#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (Debian, as root, no systemd).
#
# Idempotent: when the daemons this script started are still alive, or a controller already
# answers `scontrol ping`, it says so and exits 0. The pids of the daemons it starts are
# recorded in the state directory; scripts/slurm/stop.sh stops those and nothing else.
#
# Environment:
#   TRAINSET_SLURM_STATE   state directory (default /tmp/trainset-slurm): pids, spool, logs
#   TRAINSET_SLURM_NO_APT  set to 1 to refuse installing missing Debian packages
set -euo pipefail

STATE="${TRAINSET_SLURM_STATE:-/tmp/trainset-slurm}"
CONF=/etc/slurm/slurm.conf
MARKER="# written by trainset scripts/slurm/start.sh"

say() { echo "slurm/start: $*"; }
die() { echo "slurm/start: error: $*" >&2; exit 1; }

# A recorded pid counts as ours only while it is alive and still runs the program we started.
alive() {  # alive NAME -> 0 when $STATE/NAME.pid names a live process called NAME
    local name=$1 pid
    [ -s "$STATE/$name.pid" ] || return 1
    pid=$(cat "$STATE/$name.pid")
    [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$name" ]
}

if alive slurmctld && alive slurmd && scontrol ping >/dev/null 2>&1; then
    say "already running (pids $(cat "$STATE/slurmctld.pid") $(cat "$STATE/slurmd.pid")); nothing to do"
    exit 0
fi
if command -v scontrol >/dev/null 2>&1 && scontrol ping >/dev/null 2>&1; then
    say "a SLURM controller not started by this script already answers; nothing to do"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "must run as root (it starts slurmctld, slurmd and munged)"

missing=()
for prog in slurmctld slurmd sbatch munged; do
    command -v "$prog" >/dev/null 2>&1 || missing+=("$prog")
done
if [ "${#missing[@]}" -gt 0 ]; then
    [ "${TRAINSET_SLURM_NO_APT:-0}" = 1 ] && die "missing ${missing[*]} and TRAINSET_SLURM_NO_APT=1"
    say "installing slurmctld slurmd slurm-client munge (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null \
        || { apt-get update >/dev/null && apt-get install -y --no-install-recommends \
                slurmctld slurmd slurm-client munge >/dev/null; } \
        || die "apt-get install slurmctld slurmd slurm-client munge failed"
fi

if [ -e "$CONF" ] && ! grep -qxF "$MARKER" "$CONF"; then
    die "$CONF exists and was not written by this script; refusing to overwrite it"
fi

mkdir -p "$STATE/spool/ctld" "$STATE/spool/d" "$STATE/log"

# munge: use a running one when it answers, else start our own as the munge user.
if ! (munge -n | unmunge) >/dev/null 2>&1; then
    [ -s /etc/munge/munge.key ] || die "/etc/munge/munge.key is missing (reinstall the munge package)"
    mkdir -p /run/munge && chown munge:munge /run/munge && chmod 0755 /run/munge
    runuser -u munge -- /usr/sbin/munged --force
    for _ in $(seq 50); do
        [ -s /run/munge/munged.pid ] && (munge -n | unmunge) >/dev/null 2>&1 && break
        sleep 0.1
    done
    (munge -n | unmunge) >/dev/null 2>&1 || die "munged did not start"
    cp /run/munge/munged.pid "$STATE/munged.pid"
    say "munged started (pid $(cat "$STATE/munged.pid"))"
fi

host=$(hostname -s)
node=$(slurmd -C | head -n 1)  # "NodeName=<host> CPUs=... RealMemory=..."
[ "${node%% *}" = "NodeName=$host" ] || die "unexpected 'slurmd -C' output: $node"

tmp_conf=$(mktemp "$CONF.XXXXXX")
cat >"$tmp_conf" <<CONF
$MARKER
# One-node cluster for trainset's tests: partitions 'cpu' (default) and 'gpu' on this node.
ClusterName=trainset
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
SchedulerParameters=batch_sched_delay=0
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/slurmctld.daemon.pid
SlurmdPidFile=$STATE/slurmd.daemon.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host Default=NO MaxTime=INFINITE State=UP
CONF
chmod 0644 "$tmp_conf"
mv "$tmp_conf" "$CONF"

start_daemon() {  # start_daemon NAME: run it (it daemonises), record the pid from its pid file
    local name=$1
    if alive "$name"; then return 0; fi
    rm -f "$STATE/$name.daemon.pid"
    "/usr/sbin/$name" >>"$STATE/log/$name.start.log" 2>&1 || die "$name failed (see $STATE/log)"
    for _ in $(seq 100); do
        [ -s "$STATE/$name.daemon.pid" ] && break
        sleep 0.1
    done
    [ -s "$STATE/$name.daemon.pid" ] || die "$name wrote no pid file (see $STATE/log/$name.log)"
    cp "$STATE/$name.daemon.pid" "$STATE/$name.pid"
    say "$name started (pid $(cat "$STATE/$name.pid"))"
}

start_daemon slurmctld
start_daemon slurmd

for _ in $(seq 100); do
    if scontrol ping >/dev/null 2>&1 && sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then
        say "ready: $(sinfo -h -o '%P %D %T %c' | tr '\n' ';')"
        exit 0
    fi
    sleep 0.2
done
die "the node did not become idle (see $STATE/log/slurmctld.log and slurmd.log)"
