#!/usr/bin/env bash
# `make test-docker`: the LocalStack runs in Docker that CI does not make (README.md, "LocalStack").
# Skips, and says so, where no Docker engine answers. Otherwise, on LOCALSTACK_IMAGE (default: the
# pinned community image when the engine has it or can pull it, else the offline build of
# docker/localstack-offline/build.sh, made here when missing):
#   1. the compose profile: make up, make demo, make test-integration, make down, then nothing left;
#   2. the testcontainers path: make test-integration with ESJOIN_LOCALSTACK_START=testcontainers.
# Prints what ran and how long each step took.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "test-docker: $*"; }
if ! docker info >/dev/null 2>&1; then
  say "SKIPPED: no Docker engine answers (start dockerd, or set DOCKER_HOST); nothing was run"
  exit 0
fi

image="${LOCALSTACK_IMAGE:-}"
if [ -z "$image" ]; then
  image=localstack/localstack:4.14.0
  if ! docker image inspect "$image" >/dev/null 2>&1 && ! docker pull -q "$image" >/dev/null 2>&1; then
    say "$image cannot be pulled here: using the offline build"
    image="$(bash docker/localstack-offline/build.sh | tail -1)"
  fi
fi
export LOCALSTACK_IMAGE="$image"
# testcontainers' reaper image cannot be pulled offline either; the harness removes what it starts.
if ! docker image inspect testcontainers/ryuk:0.8.1 >/dev/null 2>&1; then export TESTCONTAINERS_RYUK_DISABLED=true; fi

declare -a report
step() {  # step NAME COMMAND...: run it, record its time
  local name="$1" start=$SECONDS; shift
  say "== $name"
  "$@"
  report+=("$(printf '%-58s %4d s' "$name" $((SECONDS - start)))")
}
leftovers() {
  local found
  found="$(docker ps -aq --filter label=com.docker.compose.project="$(basename "$PWD")")$(docker network ls -q --filter name='^esjoin$')"
  found+="$(docker volume ls -q --filter label=com.docker.compose.project="$(basename "$PWD")")"
  [ -z "$found" ] || { say "make down left containers, networks or volumes behind: $found"; return 1; }
}

make -s install
.venv/bin/python -c "import testcontainers" 2>/dev/null || .venv/bin/pip install -q -c constraints.txt -e '.[containers]'
make -s down BACKEND=localstack >/dev/null 2>&1 || true
step "make up BACKEND=localstack" make -s up BACKEND=localstack
step "make demo" make -s demo
step "make test-integration BACKEND=localstack (compose)" make -s test-integration BACKEND=localstack
step "make down BACKEND=localstack" make -s down BACKEND=localstack
step "nothing left behind" leftovers
step "make test-integration BACKEND=localstack (testcontainers)" \
  env ESJOIN_LOCALSTACK_START=testcontainers make -s test-integration BACKEND=localstack
say "all passed on $LOCALSTACK_IMAGE:"
printf '  %s\n' "${report[@]}"
