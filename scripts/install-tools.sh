#!/bin/sh
# Install the system tools the tests use, when we can: root with apt-get.
# promtool (Debian `prometheus`): metrics lint and a real scrape in e2e tests.
# systemd-analyze (Debian `systemd`): verifies the unit files we ship and generate.
# slurmctld, slurmd, squeue/sinfo/scontrol/sbatch, munged (Debian `slurmctld`, `slurmd`,
# `slurm-client`, `munge`): the Slurm tests run a real controller and real slurmd processes.
# Installing them starts nothing (no systemd here; where there is one, see below).
set -eu
missing=""
# A program is there when it is on PATH or in /usr/sbin (daemons; not on every user's PATH).
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have promtool || missing="$missing prometheus"
have systemd-analyze || missing="$missing systemd"
have slurmctld || missing="$missing slurmctld"
have slurmd || missing="$missing slurmd"
have squeue || missing="$missing slurm-client"
have munged || missing="$missing munge"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "warning: missing system packages:$missing (not root or no apt-get); tests that need them will skip"
    exit 0
fi
echo "installing system packages:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
# The Debian prometheus package starts a server on :9090 where it can; we want only its binaries.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
pkill -x prometheus 2>/dev/null || true
# Where systemd runs, the Slurm and munge packages enable their services; the tests start their
# own on private sockets and ports, so keep the system ones off.
if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now slurmctld slurmd munge >/dev/null 2>&1 || true
fi
