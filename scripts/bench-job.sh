#!/usr/bin/env bash
# A benchmark, not a test: a Job of 500 completions with parallelism 50 on the simulated
# runtime, through kubectl. Its pods' containers run a short time (the simulated runtime's
# `sim.nodeless.io/run-seconds` annotation) and exit 0. Prints the time to `condition=complete`,
# completions per second and the server's peak RSS (VmHWM), then the time until every pod is
# gone after the Job is deleted.
# Usage: scripts/bench-job.sh [path to a nodeless binary] [completions] [parallelism] [run seconds]
# (default: a release build, `cargo build --release -p nodeless`, 500, 50 and 0.5 s)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/nodeless}
completions=${2:-500}
parallelism=${3:-50}
run_seconds=${4:-0.5}
source scripts/bench-cluster.sh "$bin"
kubectl apply -f - >/dev/null <<YAML
apiVersion: batch/v1
kind: Job
metadata: {name: bench}
spec:
  completions: $completions
  parallelism: $parallelism
  backoffLimit: 0
  template:
    metadata: {annotations: {sim.nodeless.io/run-seconds: "$run_seconds"}}
    spec:
      restartPolicy: Never
      containers: [{name: a, image: busybox}]
YAML
start=$(now)
kubectl wait --for=condition=complete --timeout=600s job/bench >/dev/null
took=$(echo "$(now) - $start" | bc)
echo "complete:   $took s, $(echo "scale=1; $completions / $took" | bc) completions/s, peak RSS $(peak), server CPU $(cpu)"
kubectl delete job bench >/dev/null
start=$(now)
until [[ $(kubectl get pods -l job-name=bench -o name | wc -l) == 0 ]]; do sleep 0.5; done
echo "deleted:    $(echo "$(now) - $start" | bc) s, peak RSS $(peak), server CPU $(cpu)"
