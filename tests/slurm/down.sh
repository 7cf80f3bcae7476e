#!/usr/bin/env bash
# Stop the single-node SLURM cluster that tests/slurm/up.sh started.
#
#   bash tests/slurm/down.sh
#
# Stops only the daemons whose PIDs up.sh recorded in the state dir (HOMING_SLURM_STATE,
# default /tmp/homing-slurm), in reverse start order: SIGTERM, then SIGKILL after
# HOMING_SLURM_STOP_TIMEOUT seconds (20). Waits for each to exit. Keeps the state dir
# (logs) and /etc/slurm for inspection; up.sh starts afresh anyway. Safe to run twice.
set -euo pipefail

STATE="${HOMING_SLURM_STATE:-/tmp/homing-slurm}"
STOP_TIMEOUT="${HOMING_SLURM_STOP_TIMEOUT:-20}"
T0=$EPOCHREALTIME

seconds_since() {
    local us=$((${EPOCHREALTIME/./} - ${1/./}))
    printf '%d.%d' $((us / 1000000)) $((us % 1000000 / 100000))
}
log() { printf '[slurm-down] %s\n' "$*"; }

# running PID: the process exists and is not a zombie (a daemon whose parent is gone may
# stay a zombie until init reaps it; it has exited all the same).
running() {
    [ -r "/proc/$1/stat" ] || return 1
    local rest
    rest="$(cut -d')' -f2- "/proc/$1/stat" 2>/dev/null)" || return 1
    [ "${rest:1:1}" != Z ]
}

# daemon binary of each PID file (a PID left from before a reboot may belong to another
# process now: only a process running this binary is stopped)
binary() { case "$1" in mariadb) echo mariadbd ;; *) echo "$1" ;; esac; }

stop() {
    local name="$1" pidfile="$STATE/$1.pid" pid i
    [ -f "$pidfile" ] || return 0
    pid="$(cat "$pidfile")"
    if running "$pid" && ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "/$(binary "$name") "; then
        log "PID $pid of $name is now another program; not stopping it"
    elif running "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
            running "$pid" || break
            sleep 0.1
        done
        if running "$pid"; then
            log "$name ($pid) still running after ${STOP_TIMEOUT} s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            for ((i = 0; i < 50; i++)); do
                running "$pid" || break
                sleep 0.1
            done
        fi
        running "$pid" && log "WARNING: $name ($pid) did not exit" || log "stopped $name ($pid)"
    fi
    rm -f "$pidfile"
}

if [ ! -d "$STATE" ]; then
    log "no state dir $STATE: nothing to stop"
    exit 0
fi
for d in slurmd slurmctld slurmdbd mariadb munged; do
    stop "$d"
done
log "tear-down took $(seconds_since "$T0") s (logs kept in $STATE/log)"
