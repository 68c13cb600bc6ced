#!/usr/bin/env bash
# A benchmark, not a test: a 1000-replica Deployment on the simulated runtime, through kubectl.
# Prints the time to fully available (and pods per second), the time until every pod is gone
# after the delete, and after each phase the server's peak RSS (VmHWM) and CPU time so far.
# Usage: scripts/bench-deployment.sh [path to a nodeless binary] [replicas]
# (default: a release build, `cargo build --release -p nodeless`, and 1000 replicas)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/nodeless}
replicas=${2:-1000}
source scripts/bench-cluster.sh "$bin"
kubectl apply -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: bench}
spec:
  replicas: $replicas
  selector: {matchLabels: {app: bench}}
  template:
    metadata: {labels: {app: bench}}
    spec: {containers: [{name: a, image: busybox}]}
YAML
start=$(now)
until [[ $(kubectl get deploy bench -o jsonpath='{.status.availableReplicas}') == "$replicas" ]]; do
  sleep 0.5
done
took=$(echo "$(now) - $start" | bc)
echo "available:  $took s, $(echo "scale=1; $replicas / $took" | bc) pods/s, peak RSS $(peak), server CPU $(cpu)"
kubectl delete deploy bench >/dev/null
start=$(now)
until [[ $(kubectl get pods -l app=bench -o name | wc -l) == 0 ]]; do sleep 0.5; done
echo "deleted:    $(echo "$(now) - $start" | bc) s, peak RSS $(peak), server CPU $(cpu)"
