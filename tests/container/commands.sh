# The Docker commands the container check runs (tests/container/run.sh), each
# verbatim in docs/docker.md; sourced by run.sh and by tests/test_docs.py.
# `bash -c 'source tests/container/commands.sh; check_doc'` says whether the
# doc still holds every one, without building anything.

DOCKER_DOC=docs/docker.md  # relative to the repository

BUILD='docker build -t tff-localsgd --build-arg GIT_COMMIT="$(git describe --always --dirty --abbrev=40)" .'
MKDIR='mkdir -p out'
SMOKE='docker run --rm -v "$PWD/out:/out" --user "$(id -u):$(id -g)" tff-localsgd reproduce --preset=smoke'
FLAGFILE="printf -- '--experiment=small\\n--width=64\\n--rounds=3\\n' > small.cfg"
TRAIN='docker run --rm -v "$PWD/out:/out" -v "$PWD/small.cfg:/small.cfg:ro" --user "$(id -u):$(id -g)" tff-localsgd train --flagfile=/small.cfg'
SWEEP='docker run --rm -v "$PWD/out:/out" --user "$(id -u):$(id -g)" tff-localsgd sweep --grid=width=64,256 --rounds=3 --parallel=2 --sweep=widths'
TENSORBOARD='docker run -d --name tff-tensorboard -p 6006:6006 -v "$PWD/out:/out:ro" tff-localsgd tensorboard'
TEST='docker run --rm tff-localsgd test tests/test_local_update.py'
DOC_CMDS=("$BUILD" "$TEST" "$MKDIR" "$FLAGFILE" "$TRAIN" "$SWEEP" "$SMOKE" "$TENSORBOARD")

# in_doc FILE 'COMMAND': whether COMMAND is a line of FILE, verbatim
in_doc() {
  grep -qxF -- "$2" "$1"
}

# check_doc [FILE]: every command above in FILE (default: the repository's
# $DOCKER_DOC); prints each missing one and returns 1 if any is
check_doc() {
  local repo cmd missing=0
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  local doc="${1:-$repo/$DOCKER_DOC}"
  for cmd in "${DOC_CMDS[@]}"; do
    if ! in_doc "$doc" "$cmd"; then
      printf 'not in %s verbatim: %s\n' "$doc" "$cmd"
      missing=1
    fi
  done
  return "$missing"
}
