#!/usr/bin/env bash
# A single-node SLURM 22.05 cluster on this machine, for the real-SLURM tests of
# tests/test_cluster.py: munged, slurmctld and slurmd, one node (this host, its CPUs and
# memory) in one partition `debug`. Root only (the daemons and `apt-get install` need it).
# Idempotent and quick: when the cluster already answers with an idle node and the
# configuration is unchanged it returns at once; it never overwrites a slurm.conf it did not
# write itself.
#
# Made for containers: no cgroups (proctrack/linuxproc, task/none), no accounting (no slurmdbd:
# `sacct` fails, so submitit sees a task's end only by its result file; the tests allow for it).
# AuthInfo=cred_expire=5 and a 2 s scheduling interval let a requeued job start again after
# ~5-10 s instead of SLURM's 120 s.
#
# Usage: .ci/slurm_single_node.sh [--install]   (--install: apt-get the packages if missing)
set -euo pipefail

conf=/etc/slurm/slurm.conf
marker="# written by ntk-sweep .ci/slurm_single_node.sh"
log=/var/log/slurm
say() { echo "slurm_single_node: $*"; }

if [ "$(id -u)" != 0 ]; then
    say "not root: cannot install or start SLURM (the real-SLURM tests will be skipped)"
    exit 1
fi

if ! command -v sbatch >/dev/null || ! command -v slurmctld >/dev/null \
    || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    if [ "${1:-}" != --install ] || ! command -v apt-get >/dev/null; then
        say "SLURM or munge is not installed (apt-get install slurmctld slurmd slurm-client munge)"
        exit 1
    fi
    say "installing slurmctld, slurmd, slurm-client and munge (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
fi

# --- slurm.conf: this host, its CPUs and memory as slurmd itself measures them
host="$(hostname -s)"
mem="$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')"
want="$marker
ClusterName=ntk-ci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
# a requeued job waits cred_expire seconds before it may start again (default 120)
AuthInfo=cred_expire=5
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$log/slurmctld.log
SlurmdLogFile=$log/slurmd.log
# containers: no cgroups, no accounting database
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP"
changed=0
if [ -e "$conf" ] && ! grep -q -F "$marker" "$conf"; then
    say "$conf exists and was not written by this script: using it as it is"
elif [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
    mkdir -p /etc/slurm
    printf '%s\n' "$want" >"$conf"
    changed=1
fi

node_up() { sinfo -h -N -o "%t" 2>/dev/null | grep -q -E '^(idle|mix|alloc)'; }
if [ "$changed" = 0 ] && scontrol ping 2>/dev/null | grep -q UP && node_up; then
    say "already running: $(sinfo -h -N -o '%N %t %c CPUs %m MB')"
    exit 0
fi

# --- munge: the key (the Debian package creates one) and the daemon
if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
        || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi

# --- the daemons (one left from an earlier configuration is restarted)
mkdir -p /var/spool/slurmctld /var/spool/slurmd "$log"
start() {  # daemon, its pid file
    if [ -s "$2" ] && kill -0 "$(cat "$2")" 2>/dev/null; then
        kill "$(cat "$2")"
        for _ in $(seq 50); do kill -0 "$(cat "$2" 2>/dev/null)" 2>/dev/null || break; sleep 0.1; done
    fi
    "/usr/sbin/$1"
}
start slurmctld /run/slurmctld.pid
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
start slurmd /run/slurmd.pid
for _ in $(seq 150); do node_up && break; sleep 0.2; done
if ! node_up; then
    say "the node did not come up: $(sinfo -h -N -o '%N %t %E' 2>&1)"
    tail -n 20 "$log/slurmctld.log" "$log/slurmd.log" >&2 || true
    exit 1
fi
say "up: $(sinfo -h -N -o '%N %t %c CPUs %m MB, partition %P')"
