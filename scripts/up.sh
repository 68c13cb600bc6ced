#!/usr/bin/env bash
# Builds nodeless and runs the whole cluster with the embedded defaults.
# The admin kubeconfig is written to $DATA_DIR/kubeconfig (default ./.nodeless/kubeconfig).
# Usage: scripts/up.sh [extra flags for `nodeless up`]
set -euo pipefail
cd "$(dirname "$0")/.."
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
need_pkgs=()
command -v cc >/dev/null || need_pkgs+=(build-essential)
# The gRPC bindings (CRI, etcd) are generated with protoc at build time.
command -v protoc >/dev/null || need_pkgs+=(protobuf-compiler)
# `ip`: the service CIDR route of the service proxy.
command -v ip >/dev/null || need_pkgs+=(iproute2)
# The container runtime for real pods: containerd, runc and the CNI plugins (/usr/lib/cni).
for pkg in containerd runc containernetworking-plugins; do
  installed "$pkg" || need_pkgs+=("$pkg")
done
if ((${#need_pkgs[@]})); then
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  # nodeless runs its own containerd (own socket and state); keep the package from starting a
  # system containerd.service during the install (a policy-rc.d that exits 101), unless the
  # machine has a policy of its own.
  policy=/usr/sbin/policy-rc.d own_policy=
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null && $SUDO chmod 755 "$policy"
    own_policy=1
    trap '$SUDO rm -f "$policy"' EXIT
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -o Dpkg::Use-Pty=0 "${need_pkgs[@]}" >/dev/null
  if [[ $own_policy ]]; then
    $SUDO rm -f "$policy"
    trap - EXIT
  fi
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/nodeless-target}"
cargo build --release -p nodeless
DATA_DIR="${DATA_DIR:-$PWD/.nodeless}"
echo "kubeconfig: $DATA_DIR/kubeconfig  (export KUBECONFIG=$DATA_DIR/kubeconfig)"
exec "$CARGO_TARGET_DIR/release/nodeless" up --data-dir "$DATA_DIR" "$@"
