#!/usr/bin/env bash
# Delete nodes the cluster autoscaler scaled in that are now gone (unreachable).
set -uo pipefail
export PATH="$PATH:@DOWNLOAD_DIR@"
export KUBECONFIG=/etc/kubernetes/admin.conf
selector='.items[]
    | select(any(.spec.taints[]?; .key == "ToBeDeletedByClusterAutoscaler"))
    | select(any(.spec.taints[]?; .key == "node.kubernetes.io/unreachable"))
    | select(any(.status.conditions[]?; .type == "Ready" and .status == "Unknown"))
    | .metadata.name'
while true; do
    echo "checking for scaled-in nodes"
    for node in $(kubectl get nodes -o json | jq -r "$selector"); do
        echo "node $node was scaled in and is gone; deleting it"
        kubectl delete node "$node" || true
    done
    sleep 300
done
