#!/usr/bin/env bash
# Bootstrap the control plane once, then record how workers join it.
set -euo pipefail
FLAG_FILE="@SETUP_STATE_DIR@/create-kubernetes-cluster.done"
export PATH="$PATH:@DOWNLOAD_DIR@"

# kubeadm init needs the kubelet running (and restarting) while it works.
systemctl start kubelet

# On clouds with a metadata service, use its host name (kubeadm registers the node by it).
if name="$(curl -fs --max-time 5 http://169.254.169.254/latest/meta-data/hostname)"; then
    hostnamectl set-hostname "$name"
fi

if [ ! -e /etc/kubernetes/admin.conf ]; then
    kubeadm init --config /home/core/kubernetes-leader.yml
fi
mkdir -p "$HOME/.kube"
cp /etc/kubernetes/admin.conf "$HOME/.kube/config"
export KUBECONFIG=/etc/kubernetes/admin.conf

# Pod network.
kubectl apply -f "https://raw.githubusercontent.com/flannel-io/flannel/@FLANNEL_VERSION@/Documentation/kube-flannel.yml"

# Approve kubelet serving-certificate requests (serverTLSBootstrap).
for manifest in service_account role role_binding operator; do
    kubectl apply -f "https://raw.githubusercontent.com/kontena/kubelet-rubber-stamp/release/@RUBBER_STAMP_VERSION@/deploy/$manifest.yaml"
done

@AUTOSCALER_SETUP@# Metrics server, for `kubectl top`.
curl -fsSL "https://github.com/kubernetes-sigs/metrics-server/releases/download/@METRICS_API_VERSION@/components.yaml" \
    | sed 's/          - --secure-port=4443/          - --secure-port=4443\n          - --kubelet-preferred-address-types=Hostname/' \
    | kubectl apply -f -

# Joining information for workers, in INI form (section DEFAULT).
hash="$(openssl x509 -pubkey -in /etc/kubernetes/pki/ca.crt \
    | openssl rsa -pubin -outform der 2>/dev/null | openssl dgst -sha256 -hex | sed 's/^.* //')"
{
    echo "[DEFAULT]"
    echo "JOIN_TOKEN=$(kubeadm token create --ttl 0)"
    echo "JOIN_CERT_HASH=sha256:$hash"
    echo "JOIN_ENDPOINT=$(hostname):6443"
} >/etc/kubernetes/worker.ini.new
mv /etc/kubernetes/worker.ini.new /etc/kubernetes/worker.ini

mkdir -p "@SETUP_STATE_DIR@"
touch "$FLAG_FILE"
