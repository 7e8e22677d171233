#!/usr/bin/env bash
# Collect the ephemeral (instance-store) disks, RAID-0 them when there are
# several, mount them on /mnt/ephemeral and bind-mount the work directories
# onto them. With no ephemeral disk, the directories stay on the root disk.
set -euo pipefail
directories=(lib/toil lib/mesos lib/docker lib/kubelet lib/cwl tmp)
scratch=/mnt/ephemeral

if mountpoint -q "$scratch"; then
    echo "$scratch already mounted"
else
    drives=()
    shopt -s nullglob
    for candidate in /dev/xvd[a-z] /dev/nvme[0-9]n1 /dev/nvme[1-2][0-9]n1; do
        [ -b "$candidate" ] || continue
        drive="$(readlink -f "$candidate")"
        case " ${drives[*]-} " in *" $drive "*) continue ;; esac
        if lsblk -nro MOUNTPOINT "$drive" | grep -q .; then
            echo "$drive is in use (likely the root disk); skipping"
            continue
        fi
        drives+=("$drive")
    done
    echo "ephemeral drives: ${drives[*]-none}"
    if [ "${#drives[@]}" -eq 0 ]; then
        for directory in "${directories[@]}"; do
            mkdir -p "/var/$directory"
        done
        exit 0
    fi
    if [ "${#drives[@]}" -eq 1 ]; then
        device="${drives[0]}"
    else
        device=/dev/md0
        for drive in "${drives[@]}"; do
            wipefs -a "$drive"
        done
        mdadm --create --force --run --verbose "$device" --level=0 \
            --raid-devices="${#drives[@]}" "${drives[@]}"
    fi
    mkfs.ext4 -F "$device"
    mkdir -p "$scratch"
    mount "$device" "$scratch"
fi

for directory in "${directories[@]}"; do
    mkdir -p "$scratch/var/$directory" "/var/$directory"
    mountpoint -q "/var/$directory" || \
        mount --bind "$scratch/var/$directory" "/var/$directory"
done
