#!/usr/bin/env bash
# Start the units this node's user data wrote, once the packages they need are installed:
# cloud-init runs it last (runcmd), after write_files and the packages.
set -euo pipefail
programs=(@PROGRAMS@)  # what the units run, from the packages or the image
units=(@UNITS@)        # the enabled units, in the order the config added them

missing=0
for program in "${programs[@]}"; do
    if [ ! -x "$program" ]; then
        echo "$program is missing: install its package or use an image that has it" >&2
        missing=1
    fi
done
if [ "$missing" -ne 0 ]; then
    exit 1
fi

# The units are ours (a package's unit of the same name, e.g. Debian's slurmd.service, is
# overridden by /etc/systemd/system). A package's maintainer script may have started its
# service before the key or the script was in place: restart, not just start.
systemctl daemon-reload
if [ "${#units[@]}" -gt 0 ]; then
    systemctl enable "${units[@]}"
    echo "starting ${units[*]}"
    systemctl restart "${units[@]}"
fi
