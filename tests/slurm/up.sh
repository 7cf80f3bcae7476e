#!/usr/bin/env bash
# Bring up a single-node SLURM cluster on THIS machine, for tests/test_slurm.py and CI.
#
#   bash tests/slurm/up.sh      # as root; stop it again with: bash tests/slurm/down.sh
#
# What it does, with no systemd:
#   1. installs Debian's slurm-wlm, slurmctld, slurmd, slurm-client, munge and, for real
#      accounting, slurmdbd and mariadb-server (apt-get, non-interactive; skipped when
#      everything is installed already);
#   2. writes /etc/slurm/slurm.conf (and slurmdbd.conf, cgroup.conf) for this machine: one
#      node named `hostname -s` with the CPUs and (90 % of) the memory `slurmd -C` reports,
#      one default partition `homing`, cluster `homing`;
#   3. starts munged, MariaDB (its own data dir, 127.0.0.1 only), slurmdbd, slurmctld and
#      `slurmd -N <node>` directly, records their PIDs in the state dir, registers the
#      cluster, account `homing` and user root with sacctmgr, and waits until sinfo shows
#      the node idle.
#
# Environment:
#   HOMING_SLURM_STATE       state dir: PID files, logs, spool, database (/tmp/homing-slurm)
#   HOMING_SLURM_ACCOUNTING  1 (default): slurmdbd + MariaDB, so `sacct` works and the
#                            executor plugin's default status polling (sacct) is tested.
#                            0: no accounting; MinJobAge is raised so that the plugin can poll
#                            with `--slurm-status-command squeue` instead.
#   HOMING_SLURM_TIMEOUT     seconds to wait for each daemon (60)
#   HOMING_SLURM_DB_PORT     MariaDB TCP port on 127.0.0.1 (3307, to stay off a system MariaDB)
#
# It refuses to overwrite a /etc/slurm/slurm.conf that it did not write itself. Running it
# again while the cluster is up only checks that the node is idle.
set -euo pipefail

STATE="${HOMING_SLURM_STATE:-/tmp/homing-slurm}"
ACCOUNTING="${HOMING_SLURM_ACCOUNTING:-1}"
TIMEOUT="${HOMING_SLURM_TIMEOUT:-60}"
DB_PORT="${HOMING_SLURM_DB_PORT:-3307}"
CLUSTER=homing
ACCOUNT=homing
PARTITION=homing
MARK="# Written by Homing tests/slurm/up.sh"
CONF_DIR=/etc/slurm

# seconds_since T: seconds (one decimal) from $EPOCHREALTIME value T until now
seconds_since() {
    local us=$((${EPOCHREALTIME/./} - ${1/./}))
    printf '%d.%d' $((us / 1000000)) $((us % 1000000 / 100000))
}
log() { printf '[slurm-up] %s\n' "$*"; }
die() {
    printf '[slurm-up] ERROR: %s\n' "$*" >&2
    for f in "$STATE"/log/*.log; do
        [ -f "$f" ] || continue
        printf '\n----- %s (last 40 lines) -----\n' "$f" >&2
        tail -n 40 "$f" >&2
    done
    exit 1
}

[ "$(id -u)" = 0 ] || die "run as root (daemons, /etc/slurm and apt-get need it)"

# ---------------------------------------------------------------- 1. packages
PKGS=(slurm-wlm slurmctld slurmd slurm-client munge)
[ "$ACCOUNTING" = 1 ] && PKGS+=(slurmdbd mariadb-server mariadb-client)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    t0=$EPOCHREALTIME
    # Packages must not start their services (no systemd here; we start the daemons below).
    own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        own_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ "$own_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
    log "apt-get install took $(seconds_since "$t0") s"
else
    log "packages already installed"
fi

T0=$EPOCHREALTIME

NODE="$(hostname -s)"

# alive NAME: the PID recorded for daemon NAME runs that daemon (not a zombie, and not a
# PID reused by another program after a reboot)
alive() {
    local pid bin="$1"
    [ "$1" = mariadb ] && bin=mariadbd
    [ -f "$STATE/$1.pid" ] || return 1
    pid="$(cat "$STATE/$1.pid")"
    [ -r "/proc/$pid/stat" ] && [ "$(cut -d')' -f2- "/proc/$pid/stat" | cut -c2)" != Z ] &&
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "/$bin "
}

node_state() { sinfo -h -n "$NODE" -o %t 2>/dev/null | head -n1 || true; }

# Already up? Then only check.
if alive slurmctld && alive slurmd; then
    st="$(node_state)"
    if [ "$st" = idle ] || [ "$st" = mix ] || [ "$st" = alloc ]; then
        log "already running (node $NODE is $st); state in $STATE"
        exit 0
    fi
    die "daemons are running from $STATE but node $NODE is '$st'; run tests/slurm/down.sh first"
fi
for d in munged mariadb slurmdbd slurmctld slurmd; do
    if alive "$d"; then
        die "$d from an earlier bring-up is still running; run tests/slurm/down.sh first"
    fi
done

# ---------------------------------------------------------------- 2. configuration
if [ -f "$CONF_DIR/slurm.conf" ] && ! grep -qF "$MARK" "$CONF_DIR/slurm.conf"; then
    die "$CONF_DIR/slurm.conf exists and was not written by this script; not touching it"
fi

rm -rf "$STATE"
mkdir -p "$STATE"/{log,ctld,spool,mysql}
chmod 755 "$STATE"

# `slurmd -C` prints e.g. "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2
# ThreadsPerCore=1 RealMemory=24105"; keep the topology, name the node, leave 10 % memory.
HW="$(slurmd -C 2>/dev/null | head -n1)"
[ -n "$HW" ] || die "slurmd -C printed nothing"
field() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$HW"; }
CPUS="$(field CPUs)"
MEM="$(field RealMemory)"
MEM=$((MEM * 9 / 10))
TOPO="$(grep -o 'Boards=[0-9]* SocketsPerBoard=[0-9]* CoresPerSocket=[0-9]* ThreadsPerCore=[0-9]*' <<<"$HW" || true)"
DEF_MEM=$((MEM / CPUS < 1000 ? MEM / CPUS : 1000))

if [ "$ACCOUNTING" = 1 ]; then
    ACCT_CONF="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
    MIN_JOB_AGE=300
else
    ACCT_CONF="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
    # The plugin polls with squeue only while MinJobAge >= 3 x its first status check
    # delay (40 s by default); finished jobs must stay visible to squeue that long.
    MIN_JOB_AGE=600
fi

mkdir -p "$CONF_DIR"
cat >"$CONF_DIR/slurm.conf" <<EOF
$MARK on $(date -u +%FT%TZ) for node $NODE; state in $STATE.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
# The sandbox's cgroups are limited: track processes through /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# A job that asks for no memory gets this per CPU instead of the whole node.
DefMemPerCPU=$DEF_MEM
ReturnToService=2
MinJobAge=$MIN_JOB_AGE
SlurmctldTimeout=30
SlurmdTimeout=60
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.daemon.pid
SlurmdPidFile=$STATE/slurmd.daemon.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
$ACCT_CONF
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS $TOPO RealMemory=$MEM State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

cat >"$CONF_DIR/cgroup.conf" <<EOF
$MARK. Not used (proctrack/linuxproc, task/none), present so no daemon looks for one.
CgroupPlugin=autodetect
IgnoreSystemd=yes
EOF

# ---------------------------------------------------------------- 3. daemons
# start NAME LOGFILE CMD...: run CMD in the foreground of its own session, PID to STATE/NAME.pid
start() {
    local name="$1" logfile="$2"
    shift 2
    setsid "$@" >>"$logfile" 2>&1 </dev/null &
    echo $! >"$STATE/$name.pid"
}

wait_for() { # wait_for WHAT CMD...: retry CMD until it succeeds or TIMEOUT passes
    local what="$1" i
    shift
    for ((i = 0; i < TIMEOUT * 5; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    die "$what not ready after ${TIMEOUT} s"
}

# munge: reuse a munged that already answers (not ours to stop), else start our own.
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "munged already running; using it"
else
    [ -s /etc/munge/munge.key ] || {
        if command -v mungekey >/dev/null; then mungekey --create; else
            dd if=/dev/urandom bs=1 count=1024 >/etc/munge/munge.key 2>/dev/null
        fi
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    }
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 755 /run/munge
    touch "$STATE/log/munged.log"
    chmod 666 "$STATE/log/munged.log"
    start munged "$STATE/log/munged.log" setpriv --reuid=munge --regid=munge --init-groups \
        /usr/sbin/munged --foreground
    wait_for munged sh -c 'munge -n | unmunge'
fi

if [ "$ACCOUNTING" = 1 ]; then
    DB_PASS="homing-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
    SOCK="$STATE/mysqld.sock"
    mariadb-install-db --user=root --datadir="$STATE/mysql" --auth-root-authentication-method=socket \
        --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1 ||
        die "mariadb-install-db failed (see $STATE/log/mariadb-install.log)"
    start mariadb "$STATE/log/mariadb.log" /usr/sbin/mariadbd --no-defaults --user=root \
        --datadir="$STATE/mysql" --socket="$SOCK" --pid-file="$STATE/mariadb.daemon.pid" \
        --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve --skip-log-bin \
        --innodb-buffer-pool-size=256M --innodb-log-file-size=64M \
        --innodb-lock-wait-timeout=900 --innodb-flush-log-at-trx-commit=2
    wait_for MariaDB mariadb-admin --no-defaults --socket="$SOCK" -u root ping
    mariadb --no-defaults --socket="$SOCK" -u root <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
    (
        umask 077
        cat >"$CONF_DIR/slurmdbd.conf" <<EOF
$MARK on $(date -u +%FT%TZ); state in $STATE.
AuthType=auth/munge
DbdHost=$NODE
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
PidFile=$STATE/slurmdbd.daemon.pid
LogFile=$STATE/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
    )
    start slurmdbd "$STATE/log/slurmdbd.stderr.log" /usr/sbin/slurmdbd -D
    wait_for slurmdbd sacctmgr -n list cluster
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
    sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description="Homing tests" \
        Organization=homing >/dev/null
    sacctmgr -i add user root Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null
    if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
        sacctmgr -i add user "$SUDO_USER" Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null
    fi
else
    rm -f "$CONF_DIR/slurmdbd.conf"
fi

# -i: ignore state from an older run (the state dir is new anyway).
start slurmctld "$STATE/log/slurmctld.stderr.log" /usr/sbin/slurmctld -D -i
wait_for slurmctld sh -c 'scontrol ping | grep -q UP'
start slurmd "$STATE/log/slurmd.stderr.log" /usr/sbin/slurmd -D -N "$NODE"

for ((i = 0; i < TIMEOUT * 5; i++)); do
    st="$(node_state)"
    [ "$st" = idle ] && break
    sleep 0.2
done
[ "$st" = idle ] || {
    sinfo -N -l >&2 || true
    die "node $NODE is '${st:-unknown}', not idle, after ${TIMEOUT} s"
}
if [ "$ACCOUNTING" = 1 ]; then
    # slurmctld registers with slurmdbd right after it starts; sacct must answer from the db.
    wait_for "accounting (sacct)" sh -c "sacct -n -X -a -S now-1minutes >/dev/null && \
        sacctmgr -n list cluster format=cluster,controlhost | grep -q '$CLUSTER .*127.0.0.1'"
fi

if [ "$ACCOUNTING" = 1 ]; then
    acct="accounting by slurmdbd, account $ACCOUNT"
else
    acct="no accounting (poll with --slurm-status-command squeue)"
fi
log "node $NODE idle: CPUs=$CPUS RealMemory=${MEM} MB, partition $PARTITION, $acct;" \
    "state in $STATE"
log "bring-up took $(seconds_since "$T0") s"
