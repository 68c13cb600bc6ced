# Sourced by the bench-*.sh scripts: starts `nodeless up` on the simulated runtime from the
# binary `$1` (building a release one if it is missing) in a temporary data dir, points kubectl
# at it, and stops and removes it on exit. Defines `peak` (the server's peak RSS, VmHWM), `cpu`
# (its user + system CPU time so far, steadier than wall time on a loaded machine) and `now`.
bin=${1:-target/release/nodeless}
[[ -x $bin ]] || cargo build --release -p nodeless
dir=$(mktemp -d)
"$bin" up --data-dir "$dir" --listen 127.0.0.1:0 --runtime simulated >"$dir/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 300); do [[ -f $dir/kubeconfig ]] && break; sleep 0.1; done
export KUBECONFIG=$dir/kubeconfig
until kubectl get ns default >/dev/null 2>&1; do sleep 0.2; done
peak() { awk '/VmHWM/ {printf "%.0f MiB", $2 / 1024}' "/proc/$pid/status"; }
cpu() { awk -v tck="$(getconf CLK_TCK)" '{printf "%.1f s", ($14 + $15) / tck}' "/proc/$pid/stat"; }
now() { date +%s.%N; }
