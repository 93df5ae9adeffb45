#!/bin/bash
# The image's entrypoint: `docker run IMAGE SUBCOMMAND [FLAGS...]`. Flags after
# the subcommand go to its binary and override the defaults set here (absl
# takes a flag's last value). Results go to /out, the only place written.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: docker run [docker options] tff-localsgd SUBCOMMAND [flags...]

  gpu-check   run this first on a GPU machine: the GPU used, and agreeing
              with the CPU, on one round (exit 0; 1 not used or disagrees;
              2 no GPU visible, with a hint)
              python -m benchmarks.gpu_check ...
  reproduce   the suite and its report into /out (default: --preset=quick)
              python -m benchmarks.reproduce --out=/out ...
  train       one experiment into /out/runs/<experiment>/
              python -m benchmarks.train --root_dir=/out/runs ...
  sweep       a grid of trials into /out/runs/<sweep>/
              python -m benchmarks.sweep --root_dir=/out/runs ...
  report      the report of a suite directory (default /out)
              python -m benchmarks.report --runs=/out ...
  throughput  engine throughput, report into /out/perf/
              python -m benchmarks.throughput --out=/out/perf/PERF.md ...
  worker      a TFF worker for multi-machine runs (private networks only: no auth, no TLS)
              python -m benchmarks.worker --port=8000 ...
  tensorboard TensorBoard on port 6006, serving /out (or --logdir=...)
  test        pytest inside the image; arguments go to pytest
  shell       bash
  help        this text
USAGE
}

# Any uid can run the image (`--user "$(id -u):$(id -g)"`): give it a writable
# HOME for the data cache, matplotlib and Keras when its own is not.
if [ -z "${HOME:-}" ] || [ "$HOME" = / ] || [ ! -w "$HOME" ]; then
  export HOME=/tmp/home
  mkdir -p "$HOME"
fi

cd "${TFF_LOCALSGD_APP:-/app}"  # the code's directory (a checkout, in tests)
cmd="${1:-help}"
[ $# -gt 0 ] && shift
case "$cmd" in
  gpu-check)   exec python -m benchmarks.gpu_check "$@" ;;
  reproduce)   exec python -m benchmarks.reproduce --out=/out "$@" ;;
  train)       exec python -m benchmarks.train --root_dir=/out/runs "$@" ;;
  sweep)       exec python -m benchmarks.sweep --root_dir=/out/runs "$@" ;;
  report)      exec python -m benchmarks.report --runs=/out "$@" ;;
  throughput)  exec python -m benchmarks.throughput --out=/out/perf/PERF.md "$@" ;;
  worker)      exec python -m benchmarks.worker --port=8000 "$@" ;;
  tensorboard) exec tensorboard --logdir=/out --bind_all --port=6006 "$@" ;;
  test)        exec python -m pytest -p no:cacheprovider "$@" ;;
  shell|bash)  exec bash "$@" ;;
  help|-h|--help) usage ;;
  *) echo "tff-localsgd: unknown subcommand '$cmd'" >&2; usage >&2; exit 2 ;;
esac
