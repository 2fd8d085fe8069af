#!/usr/bin/env bash
# Peer benchmark (issue 14): vp-variant against the servers a user would pick instead, each serving the same ONNX
# model with ONNX Runtime (1 intra-op thread) and answering the same top-3 outputs (benches/peers/onnx_topk.py):
# KServe's Python model server (kserve_onnx.py), Seldon MLServer with a custom runtime (mlserver_onnx.py) and NVIDIA
# Triton, the tritonserver that the nvidia-pytriton wheel ships, with a PyTriton Python callable (triton_onnx.py).
# All are driven in one interleaved run by the same official client (tritonclient 2.73) over HTTP JSON, HTTP binary
# and gRPC where the server has them, on loopback (benches/peers/drive.py). Not part of CI.
#
# Usage: benches/peers.sh [MODEL_NAME] [OUT.json]   (default: the family's baseline, docs/results/peers.json)
#        PEERS="kserve mlserver triton" (default) picks the peers; PEERS_SECONDS=4 and PEERS_LATENCY_ROUNDS=400
#        (defaults) size the run.
# Needs: scripts/setup.sh run once (release build, datasets). Builds one Python environment per requirements file
# into $VP_CACHE/venv-peers-<name>-<hash>: the client and KServe (tests/oip's pinned clients + the ONNX Runtime of
# models/requirements.txt), MLServer (benches/peers/requirements-mlserver.txt), Triton (requirements-triton.txt).
set -euo pipefail
shopt -s inherit_errexit # a failed venv build inside $(...) stops the script
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/env.sh
model=${1:-baseline}
out=${2:-docs/results/peers.json}
peers=${PEERS:-kserve mlserver triton}
manifest=models/fmnist/ensemble.yaml
data=${VP_DATA_DIR:-/usr/share/datasets/fashion-mnist}

# venv NAME ARGS...: a venv with `pip install ARGS`, keyed by the hash of ARGS and of the files they name.
venv() {
  local name=$1 key dir
  shift
  key=$(for a in "$@"; do echo "$a"; if [ -f "$a" ]; then cat "$a"; fi; done | sha256sum | cut -c1-16)
  dir=$VP_CACHE/venv-peers-$name-$key
  if [ ! -f "$dir/.complete" ]; then
    echo "peers: building $dir" >&2
    rm -rf "$dir"
    python3.11 -m venv "$dir"
    "$dir/bin/pip" install -q "$@" >&2
    touch "$dir/.complete"
  fi
  echo "$dir"
}
ort_version=$(sed -n 's/^onnxruntime==//p' models/requirements.txt)
client=$(venv client -r tests/oip/requirements.txt "onnxruntime==$ort_version")
case " $peers " in *" mlserver "*) mlserver_venv=$(venv mlserver -r benches/peers/requirements-mlserver.txt) ;; esac
case " $peers " in *" triton "*) triton_venv=$(venv triton -r benches/peers/requirements-triton.txt) ;; esac

nice -n 10 cargo build --release --locked -q -p vp-variant
bin=$CARGO_TARGET_DIR/release/vp-variant
file=$(awk -v m="$model" '$0 ~ "name: "m"$" {f=1} f && /file:/ {print $2; exit}' "$manifest")
[ -n "$file" ] || { echo "peers: no model $model in $manifest" >&2; exit 1; }
onnx=$root/models/fmnist/$file

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d)
pids=()
# Each server runs in its own session (setsid), so its whole process group (tritonserver and its Python backend
# stub under PyTriton) is stopped on exit; the temporary files the servers make go to $work (Triton's: see below).
cleanup() {
  local p alive
  trap '' INT TERM
  for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for p in "${pids[@]}"; do kill -0 -- "-$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.2
  done
  for p in "${pids[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap "exit 130" INT
trap "exit 143" TERM
start() { # start NAME CMD...: run CMD in its own session with its log in $work/NAME.log
  local name=$1
  shift
  TMPDIR=$work setsid "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
}

specs=()
vh=$(free_port); vg=$(free_port)
start variant "$bin" --manifest "$manifest" --variant "$model" --listen "127.0.0.1:$vh" --grpc-listen "127.0.0.1:$vg" \
  --threads 1
specs+=("vp-variant=http://127.0.0.1:$vh,127.0.0.1:$vg,$model")
for peer in $peers; do
  h=$(free_port); g=$(free_port); m=$(free_port)
  case $peer in
    kserve)
      start kserve "$client/bin/python" benches/peers/kserve_onnx.py "$onnx" "$model" "$h" "$g"
      specs+=("kserve=http://127.0.0.1:$h,127.0.0.1:$g,$model") ;;
    mlserver)
      # debug off: no access log line per request (MLServer's default logs each one); parallel_workers 0: inference
      # in the server's process, as the other servers do it (MLServer's default 1 sends each request to a worker
      # process over a pipe). MLServer has no binary tensor extension over HTTP.
      mkdir "$work/mlserver"
      start mlserver env PYTHONPATH="$root/benches/peers" MLSERVER_HOST=127.0.0.1 MLSERVER_HTTP_PORT="$h" \
        MLSERVER_GRPC_PORT="$g" MLSERVER_METRICS_PORT="$m" MLSERVER_METRICS_DIR="$work/mlserver/metrics" \
        MLSERVER_ENVIRONMENTS_DIR="$work/mlserver/envs" MLSERVER_DEBUG=false MLSERVER_PARALLEL_WORKERS=0 \
        MLSERVER_MODEL_NAME="$model" MLSERVER_MODEL_URI="$onnx" MLSERVER_MODEL_IMPLEMENTATION=mlserver_onnx.OnnxRuntime \
        "$mlserver_venv/bin/mlserver" start "$work/mlserver"
      specs+=("mlserver=http://127.0.0.1:$h,127.0.0.1:$g,$model,http-json+grpc") ;;
    triton)
      # PyTriton's Python backend stub links libpython3.11.so by name; point it at the one of the interpreter the
      # venv was made from, or it loads another 3.11's library under this one's standard library. Triton and
      # PyTriton put model copies, Python environments and shared-memory tensors in /tmp and /dev/shm under names
      # of their own (not under TMPDIR), which a crash leaves behind: so they run in a mount namespace with a
      # private /tmp and /dev/shm (tmpfs), which vanish with their last process.
      libdir=$("$triton_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
      # shellcheck disable=SC2016 # "$@" is expanded by the inner shell
      start triton unshare --mount --propagation private \
        sh -c 'mount -t tmpfs tmpfs /tmp && mount -t tmpfs tmpfs /dev/shm && exec "$@"' sh \
        env LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$triton_venv/bin/python" \
        benches/peers/triton_onnx.py "$onnx" "$model" "$h" "$g" "$m" /tmp/pytriton
      specs+=("triton=http://127.0.0.1:$h,127.0.0.1:$g,$model") ;;
    *) echo "peers: unknown peer $peer (kserve, mlserver, triton)" >&2; exit 1 ;;
  esac
done
for spec in "${specs[@]}"; do
  url=${spec#*=}; url="${url%%,*}/v2/models/$model/ready"
  for _ in $(seq 300); do curl -fsS "$url" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -fsS "$url" >/dev/null || { echo "peers: $url not ready" >&2; tail -n 20 "$work"/*.log >&2; exit 1; }
done
echo "peers: model $model ($file), servers: vp-variant $peers; machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$client/bin/python" benches/peers/drive.py "$out" "$data" "${specs[@]}"
echo "peers: wrote $out; load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
