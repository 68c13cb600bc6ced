#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, then runs every test.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages are checked by name: a command of the same name can come from another package
# (the dynamic `busybox` also installs /bin/busybox, but only busybox-static runs in an image).
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

need_pkgs=()
command -v cc >/dev/null || need_pkgs+=(build-essential)
# kubectl 1.27 and 1.33 come with the machine (/usr/lib/google-cloud-sdk/bin); Debian has no package.
command -v kubectl >/dev/null || echo "warning: kubectl is not on PATH; the end-to-end tests need it" >&2
command -v protoc >/dev/null || need_pkgs+=(protobuf-compiler)
command -v etcd >/dev/null || [[ -x /usr/bin/etcd ]] || need_pkgs+=(etcd-server)
command -v openssl >/dev/null || need_pkgs+=(openssl)
# Real pods: the container runtime, CNI plugins (/usr/lib/cni), and the test registry and images
# (docker-registry on loopback, images built by umoci from busybox-static, pushed by skopeo;
# htpasswd from apache2-utils for a registry with auth; ip and ping to check pod networking;
# GNU wget and libc-bin's getent, copied with their libraries into the image that resolves names).
for pkg in containerd runc containernetworking-plugins docker-registry busybox-static umoci \
  skopeo apache2-utils iproute2 iputils-ping wget libc-bin; do
  installed "$pkg" || need_pkgs+=("$pkg")
done
if ((${#need_pkgs[@]})); then
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  # Without systemd, docker-registry's post-install starts its SysV service on :5000 (with systemd,
  # containerd's starts containerd.service too). Nothing of ours uses either, but to keep stray
  # daemons off the machine, forbid service starts during the install (a policy-rc.d that exits
  # 101), unless the machine has a policy of its own.
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

# The official Python client, for its end-to-end test.
python3 -c 'import kubernetes' 2>/dev/null || python3 -m pip install -q 'kubernetes==33.1.0'

# Reuse one target dir across clones (CI runs in a fresh clone each time).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/nodeless-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# A reused CI target dir gains nothing from incremental artifacts, which grow by gigabytes
# per run (the machine's disk filled up once).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast "$@"
