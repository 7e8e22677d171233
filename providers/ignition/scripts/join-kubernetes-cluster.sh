#!/usr/bin/env bash
# Join the cluster as a worker, once.
set -euo pipefail
FLAG_FILE="@SETUP_STATE_DIR@/join-kubernetes-cluster.done"
export PATH="$PATH:@DOWNLOAD_DIR@"

# kubeadm join needs the kubelet running (and restarting) while it works.
systemctl start kubelet

kubeadm join "@JOIN_ENDPOINT@" --config /home/core/kubernetes-worker.yml

mkdir -p "@SETUP_STATE_DIR@"
touch "$FLAG_FILE"
