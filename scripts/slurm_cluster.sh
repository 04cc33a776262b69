#!/usr/bin/env bash
# A one-node SLURM test cluster for the NAST workflow (scripts/test_slurm.sh, `make test-slurm`).
#
#   scripts/slurm_cluster.sh start    # install slurm-wlm + munge if missing, start munged,
#                                     # slurmctld, slurmd; wait until the node is idle
#   scripts/slurm_cluster.sh status   # daemons and sinfo
#   scripts/slurm_cluster.sh stop     # stop what `start` started, by PID
#   scripts/slurm_cluster.sh env      # print `export SLURM_CONF=...` for the client commands
#
# Everything lives in a project-local state dir ($NAST_SLURM_DIR, default .slurm/): slurm.conf,
# gres.conf, spool dirs, logs, PID files. Two partitions on the same node: `debug` (default, CPU
# rules) and `gpu` (a fake GPU: gres.conf `Name=gpu File=/dev/null`, so `--gres=gpu:1` schedules;
# the code still runs on CPU). No cgroups (proctrack/linuxproc, task/none) and no accounting
# daemon: Snakemake polls with `squeue` (MinJobAge=600 keeps finished jobs visible) and every
# finished job is also appended to the job-completion log $NAST_SLURM_DIR/log/jobcomp.log,
# which the test reads to prove the jobs went through sbatch.
# Client commands need SLURM_CONF=$NAST_SLURM_DIR/slurm.conf (see `env`).
# Needs root (apt-get, munged as the munge user, slurmd).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE="${NAST_SLURM_DIR:-$ROOT/.slurm}"
mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd)"
CONF="$STATE/slurm.conf"
PORT="${NAST_SLURM_PORT:-6817}"          # slurmctld; slurmd uses PORT+1
export SLURM_CONF="$CONF"

log() { echo "[slurm_cluster] $*" >&2; }

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sbatch >/dev/null; then
        return
    fi
    log "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >"$STATE/apt.log" 2>&1 \
        || { cat "$STATE/apt.log" >&2; exit 1; }
}

start_munge() {
    if [[ -S /run/munge/munge.socket.2 ]] && pgrep -x munged >/dev/null; then
        log "munged already running (not ours; left alone)"
        return
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
    chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
    chmod 0700 /etc/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    chmod 0400 /etc/munge/munge.key
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    for _ in $(seq 50); do [[ -s /run/munge/munged.pid ]] && break; sleep 0.1; done
    cp /run/munge/munged.pid "$STATE/munged.pid"
    log "munged started (pid $(cat "$STATE/munged.pid"))"
}

write_conf() {
    local host node cpus mem
    host="$(hostname -s)"
    # the node as slurmd sees the hardware (CPUs, sockets, cores, threads, memory)
    node="$(slurmd -C | head -1)"
    cpus="$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$node")"
    mem="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")"
    mkdir -p "$STATE/ctld" "$STATE/d" "$STATE/log"
    cat >"$CONF" <<EOF
# written by scripts/slurm_cluster.sh (test cluster; regenerated on every start)
ClusterName=nast-test
SlurmctldHost=$host
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid.conf
SlurmdPidFile=$STATE/slurmd.pid.conf
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MinJobAge=600
SlurmdTimeout=60
GresTypes=gpu
NodeName=$host CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host MaxTime=INFINITE State=UP
EOF
    # a count-only gres makes the node INVAL; a device file (any) makes it schedulable
    echo "NodeName=$host Name=gpu File=/dev/null" >"$STATE/gres.conf"
    # Inside a job, the Snakemake jobstep plugin strips SLURM_* variables (SLURM_CONF too)
    # before calling srun, so srun needs the config at the default path: link it there unless
    # the machine has its own (then that cluster is used and left untouched).
    mkdir -p /etc/slurm
    if [[ -L /etc/slurm/slurm.conf || ! -e /etc/slurm/slurm.conf ]]; then
        ln -sfn "$CONF" /etc/slurm/slurm.conf
        ln -sfn "$STATE/gres.conf" /etc/slurm/gres.conf
        echo /etc/slurm/slurm.conf >"$STATE/linked"
    else
        log "WARNING: /etc/slurm/slurm.conf exists and is not ours; srun inside jobs will use it"
    fi
}

wait_idle() {
    local state
    for _ in $(seq 120); do
        state="$(sinfo -h -N -o '%T' 2>/dev/null | sort -u | tr '\n' ' ')"
        if [[ "$state" =~ ^(idle|mixed|allocated)\ *$ || "$state" =~ ^idle ]]; then
            log "node ready: $state"
            return 0
        fi
        sleep 0.5
    done
    log "node did not become idle (state: ${state:-none}); see $STATE/log/"
    tail -20 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true
    return 1
}

start() {
    if alive "$STATE/slurmctld.pid" || alive "$STATE/slurmd.pid"; then
        log "already running (state dir $STATE)"
        wait_idle
        return
    fi
    local t0=$SECONDS
    install_packages
    start_munge
    write_conf
    rm -rf "${STATE:?}/ctld/"* "${STATE:?}/d/"*
    # -D: foreground, so $! is the daemon's PID (stopped by PID in `stop`); -i: ignore old state
    setsid slurmctld -D -i -f "$CONF" >>"$STATE/log/slurmctld.out" 2>&1 </dev/null &
    echo $! >"$STATE/slurmctld.pid"
    for _ in $(seq 60); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.25; done
    setsid slurmd -D -f "$CONF" >>"$STATE/log/slurmd.out" 2>&1 </dev/null &
    echo $! >"$STATE/slurmd.pid"
    wait_idle
    log "cluster up in $((SECONDS - t0)) s (SLURM_CONF=$CONF)"
}

stop_pid() {  # stop_pid NAME PIDFILE
    local name=$1 file=$2 pid
    [[ -f "$file" ]] || return 0
    pid="$(cat "$file")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
        log "stopped $name (pid $pid)"
    fi
    rm -f "$file"
}

stop() {
    if alive "$STATE/slurmctld.pid"; then
        scancel --user="$(id -un)" 2>/dev/null || true
    fi
    stop_pid slurmd "$STATE/slurmd.pid"
    stop_pid slurmctld "$STATE/slurmctld.pid"
    stop_pid munged "$STATE/munged.pid"
    if [[ -f "$STATE/linked" ]]; then
        # remove the default-path links only if they still point into our state dir
        for f in slurm.conf gres.conf; do
            [[ "$(readlink "/etc/slurm/$f" 2>/dev/null)" == "$STATE/"* ]] && rm -f "/etc/slurm/$f"
        done
        rm -f "$STATE/linked"
    fi
}

status() {
    local rc=0
    for d in munged slurmctld slurmd; do
        if alive "$STATE/$d.pid"; then echo "$d: running (pid $(cat "$STATE/$d.pid"))"
        else echo "$d: not running (by this script)"; rc=1; fi
    done
    if [[ $rc -eq 0 || -n "$(pgrep -x slurmctld || true)" ]]; then sinfo 2>/dev/null || true; fi
    return $rc
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
