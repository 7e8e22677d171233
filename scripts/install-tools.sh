#!/bin/sh
# Install the system tools the tests use, when we can: root with apt-get.
# promtool (Debian `prometheus`): metrics lint and a real scrape in e2e tests.
# systemd-analyze (Debian `systemd`): verifies the unit files we ship and generate.
# slurmctld, slurmd, squeue/sinfo/scontrol/sbatch, munged (Debian `slurmctld`, `slurmd`,
# `slurm-client`, `munge`): the Slurm tests run a real controller and real slurmd processes.
# shellcheck (Debian `shellcheck`): lints the scripts a worker's user data carries.
# cloud-init (Debian `cloud-init`): `cloud-init schema` validates the #cloud-config user data.
#   cloud-init is a boot-time agent: installed, its units would run at this host's next boot.
#   So it is never installed here: its package is unpacked (`dpkg -x`, which runs no
#   maintainer script and writes nothing outside the folder) into $tools/cloud-init, and the
#   tests run its schema command from there with the Python libraries it needs (installed
#   as packages; they hold no service).
# etcd (Debian `etcd-server`): the HA tests run private etcd members on free loopback ports.
#   Its postinst adds an `etcd` user and ENABLES etcd.service (dh_installsystemd: it would
#   start at this host's next boot), so it is unpacked like cloud-init into $tools/etcd-server
#   (one static binary, usr/bin/etcd), never installed.
#
# This installs packages and nothing else. shoal runs on a cluster's leader, whose own Slurm,
# munge and Prometheus may be production services: it never stops, disables or kills a
# service. A policy-rc.d that refuses every start keeps the packages' maintainer scripts from
# starting anything during apt-get (Debian's invoke-rc.d and deb-systemd-invoke both ask it);
# the tests run private copies on free ports and sockets and stop them by pid.
set -eu
sbin=${SHOAL_SBIN:-/usr/sbin}  # the tests point it at a folder of their own
missing=""
# A program is there when it is on PATH or in /usr/sbin (daemons; not on every user's PATH).
have() { command -v "$1" >/dev/null 2>&1 || [ -x "$sbin/$1" ]; }
have promtool || missing="$missing prometheus"
have systemd-analyze || missing="$missing systemd"
have slurmctld || missing="$missing slurmctld"
have slurmd || missing="$missing slurmd"
have squeue || missing="$missing slurm-client"
have munged || missing="$missing munge"
have shellcheck || missing="$missing shellcheck"
tools=${SHOAL_TOOLS:-/opt/shoal-tools}  # unpacked tools (cloud-init); tests look there too
unpack=""
if ! have etcd && [ ! -e "$tools/etcd-server/usr/bin/etcd" ]; then
    unpack="etcd-server"
fi
if ! have cloud-init && [ ! -e "$tools/cloud-init/usr/bin/cloud-init" ]; then
    unpack="$unpack cloud-init"
    # cloud-init's Python dependencies (Debian's Depends, less the system tools it runs
    # when it boots a machine and the schema check does not)
    missing="$missing python3-configobj python3-jinja2 python3-jsonpatch python3-jsonschema"
    missing="$missing python3-netifaces python3-oauthlib python3-requests python3-serial"
    missing="$missing python3-yaml"
fi
[ -z "$missing$unpack" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "warning: missing system packages:$missing $unpack (not root or no apt-get); tests that need them will skip"
    exit 0
fi
echo "installing system packages (no service is started):$missing; unpacking:$unpack"
export DEBIAN_FRONTEND=noninteractive
policy="$sbin/policy-rc.d"
own_policy=""
if [ ! -e "$policy" ]; then
    # exit 101: "action forbidden by policy"; removed again however apt-get ends
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
    trap 'rm -f "$policy"' EXIT INT TERM
fi
apt-get update -qq
if [ -n "$missing" ]; then
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
for package in $unpack; do
    download="$(mktemp -d)"
    (cd "$download" && apt-get download -qq -o APT::Sandbox::User=root "$package" >/dev/null)
    mkdir -p "$tools/$package"
    for deb in "$download"/*.deb; do dpkg -x "$deb" "$tools/$package"; done
    rm -rf "$download"
done
[ -n "$own_policy" ] && rm -f "$policy"
exit 0
