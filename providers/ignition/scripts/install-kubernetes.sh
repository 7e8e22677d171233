#!/usr/bin/env bash
# Download the CNI plugins, crictl, kubeadm, kubelet and kubectl, once.
set -euo pipefail
FLAG_FILE="@SETUP_STATE_DIR@/install-kubernetes.done"

# kubeadm checks that the container runtime is enabled.
systemctl enable docker.service

mkdir -p "@CNI_DIR@" "@DOWNLOAD_DIR@"
curl -fsSL "https://github.com/containernetworking/plugins/releases/download/@CNI_VERSION@/cni-plugins-linux-@ARCHITECTURE@-@CNI_VERSION@.tgz" \
    | tar -C "@CNI_DIR@" -xz
curl -fsSL "https://github.com/kubernetes-sigs/cri-tools/releases/download/@CRICTL_VERSION@/crictl-@CRICTL_VERSION@-linux-@ARCHITECTURE@.tar.gz" \
    | tar -C "@DOWNLOAD_DIR@" -xz
for tool in kubeadm kubelet kubectl; do
    curl -fsSL -o "@DOWNLOAD_DIR@/$tool" \
        "https://dl.k8s.io/release/@KUBERNETES_VERSION@/bin/linux/@ARCHITECTURE@/$tool"
    chmod +x "@DOWNLOAD_DIR@/$tool"
done

mkdir -p "@SETUP_STATE_DIR@"
touch "$FLAG_FILE"
