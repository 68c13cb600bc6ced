#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, then runs every test.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v cc >/dev/null || need_pkgs+=(build-essential)
# kubectl 1.27 and 1.33 come with the machine (/usr/lib/google-cloud-sdk/bin); Debian has no package.
command -v kubectl >/dev/null || echo "warning: kubectl is not on PATH; the end-to-end tests need it" >&2
command -v protoc >/dev/null || need_pkgs+=(protobuf-compiler)
command -v etcd >/dev/null || [[ -x /usr/bin/etcd ]] || need_pkgs+=(etcd-server)
command -v openssl >/dev/null || need_pkgs+=(openssl)
if ((${#need_pkgs[@]})); then
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}"
fi

# The official Python client, for its end-to-end test.
python3 -c 'import kubernetes' 2>/dev/null || python3 -m pip install -q 'kubernetes==33.1.0'

# Reuse one target dir across clones (CI runs in a fresh clone each time).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/nodeless-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast "$@"
