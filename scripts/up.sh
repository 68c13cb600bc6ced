#!/usr/bin/env bash
# Builds nodeless and runs the whole cluster with the embedded defaults.
# The admin kubeconfig is written to $DATA_DIR/kubeconfig (default ./.nodeless/kubeconfig).
# Usage: scripts/up.sh [extra flags for `nodeless up`]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cc >/dev/null; then
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq build-essential
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/nodeless-target}"
cargo build --release -p nodeless
DATA_DIR="${DATA_DIR:-$PWD/.nodeless}"
echo "kubeconfig: $DATA_DIR/kubeconfig  (export KUBECONFIG=$DATA_DIR/kubeconfig)"
exec "$CARGO_TARGET_DIR/release/nodeless" up --data-dir "$DATA_DIR" --runtime simulated "$@"
