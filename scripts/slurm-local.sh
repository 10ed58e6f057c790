#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for the test that runs `servelab export slurm`'s job array
# and merge job (tests/slurm.rs). As root, without systemd: Debian's slurm-wlm and munge, processes tracked
# with proctrack/linuxproc (no cgroups), task/none, and a fake GRES gpu:2 (two existing device nodes stand in
# for GPUs) so that `--gres=gpu:N` requests schedule.
#
#   scripts/slurm-local.sh install   apt-get install slurm-wlm and munge (CI's .ci/run does this; never the tests)
#   scripts/slurm-local.sh up        configure and start munged, slurmctld, slurmd; wait until the node is idle
#   scripts/slurm-local.sh down      stop the daemons this script started (by their pid files)
#
# It rewrites /etc/slurm/slurm.conf and gres.conf: run it only on a machine meant for it (CI, a container).
set -euo pipefail

state=/run/servelab-slurm
need_root() {
  if [[ "$(id -u)" != 0 ]]; then
    echo "slurm-local.sh: needs root (it configures and starts system daemons)" >&2
    exit 1
  fi
}

install() {
  need_root
  if command -v slurmctld >/dev/null && command -v munged >/dev/null; then return 0; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

configure() {
  local h cpus mem
  h="$(hostname -s)"
  cpus="$(nproc)"
  # Most of the machine's memory, in MiB, as the node's RealMemory (slurmd refuses a node that claims more).
  mem="$(awk '/MemTotal/ { printf "%d", $2 / 1024 * 0.8 }' /proc/meminfo)"
  mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /etc/slurm "$state"
  chown munge:munge /run/munge
  if [[ ! -s /etc/munge/munge.key ]]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
  cat > /etc/slurm/slurm.conf <<CONF
GresTypes=gpu
ClusterName=servelab-local
SlurmctldHost=$h
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=5
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$h CPUs=$cpus RealMemory=$mem Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=$h Default=YES MaxTime=INFINITE State=UP
CONF
  # A Count-only gpu line makes slurmd report 0 GPUs and the node INVAL: the GRES needs files that exist.
  printf 'AutoDetect=off\nNodeName=%s Name=gpu File=/dev/loop0\nNodeName=%s Name=gpu File=/dev/loop1\n' \
    "$h" "$h" > /etc/slurm/gres.conf
  for f in /dev/loop0 /dev/loop1; do
    [[ -e $f ]] || mknod "$f" b 7 "${f#/dev/loop}"
  done
}

up() {
  need_root
  command -v slurmctld >/dev/null || { echo "slurm-local.sh: slurm-wlm is not installed (run: $0 install)" >&2; exit 1; }
  # Daemons of an earlier `up` that was never brought down (a killed test) are stopped first.
  down
  configure
  if [[ ! -s /run/munge/munged.pid ]] || ! kill -0 "$(cat /run/munge/munged.pid)" 2>/dev/null; then
    su -s /bin/sh munge -c /usr/sbin/munged
    sleep 1
  fi
  cp /run/munge/munged.pid "$state/munged.pid"
  slurmctld
  sleep 2
  slurmd
  local h
  h="$(hostname -s)"
  for _ in $(seq 1 60); do
    if sinfo -h -n "$h" -o '%t' 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; then
      echo "slurm: node $h is up (gpu:2)"
      return 0
    fi
    scontrol update nodename="$h" state=resume >/dev/null 2>&1 || true
    sleep 1
  done
  echo "slurm-local.sh: the node did not come up; see /var/log/slurm/slurmctld.log and slurmd.log" >&2
  sinfo -o '%N %G %t %E' >&2 || true
  return 1
}

down() {
  for name in slurmd slurmctld munged; do
    local f="$state/$name.pid"
    if [[ -s $f ]]; then
      local pid
      pid="$(cat "$f")"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      rm -f "$f"
    fi
  done
}

case "${1:-}" in
  install) install ;;
  up) up ;;
  down) down ;;
  *) echo "usage: $0 install|up|down" >&2; exit 2 ;;
esac
