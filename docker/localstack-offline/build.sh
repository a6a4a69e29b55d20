#!/usr/bin/env bash
# Build esjoin's offline LocalStack image and its Lambda runtime image from what a machine without
# Docker Hub can reach (Debian, PyPI and npm), and print the LocalStack image's tag as the last line:
#
#   sudo bash docker/localstack-offline/build.sh
#   LOCALSTACK_IMAGE=esjoin/localstack-offline:4.14.0 make up BACKEND=localstack
#
# Steps: the Debian base (docker/offline-base.sh, only when the engine does not have it yet), the
# runtime image (lambda.Dockerfile), the LocalStack image (Dockerfile). What the image differs in from
# localstack/localstack: docs/backends.md, "Offline image". Needs a running Docker engine; root only
# when the base has to be made (debootstrap).
# Settings: ESJOIN_BASE_TAG (the base, default esjoin/python-base:3.13-trixie: Debian 13, Python 3.13),
# ESJOIN_LOCALSTACK_OFFLINE_TAG, ESJOIN_LAMBDA_OFFLINE_TAG.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="$(awk -F'==' '$1 == "localstack-core" { print $2 }' "$here/requirements.lock")"
base="${ESJOIN_BASE_TAG:-esjoin/python-base:3.13-trixie}"
lambda_image="${ESJOIN_LAMBDA_OFFLINE_TAG:-esjoin/lambda-python-offline:3.13}"
image="${ESJOIN_LOCALSTACK_OFFLINE_TAG:-esjoin/localstack-offline:$version}"

say() { echo "localstack-offline: $*" >&2; }
die() { say "$*"; exit 1; }
docker info >/dev/null 2>&1 || die "no Docker engine answers (start dockerd, or set DOCKER_HOST)"

if docker image inspect "$base" >/dev/null 2>&1; then
  say "base $base: present"
else
  say "base $base: making it with docker/offline-base.sh"
  ESJOIN_BASE_SUITE=trixie ESJOIN_BASE_TAG="$base" bash "$here/../offline-base.sh" >/dev/null
fi

build() {  # build TAG DOCKERFILE [ARG=VALUE ...]: quiet unless it fails
  local tag="$1" dockerfile="$2" log; shift 2
  log="$(mktemp)"
  say "building $tag ($(basename "$dockerfile"))"
  local args=(--build-arg "BASE_IMAGE=$base")
  for arg in "$@"; do args+=(--build-arg "$arg"); done
  if ! docker build "${args[@]}" -t "$tag" -f "$dockerfile" "$here" >"$log" 2>&1; then
    tail -30 "$log" >&2
    rm -f "$log"
    die "building $tag failed"
  fi
  rm -f "$log"
}

start=$SECONDS
build "$lambda_image" "$here/lambda.Dockerfile"
build "$image" "$here/Dockerfile" "LAMBDA_IMAGE=$lambda_image"
say "built in $((SECONDS - start)) s; use it with LOCALSTACK_IMAGE=$image"
echo "$image"
