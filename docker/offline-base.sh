#!/usr/bin/env bash
# A stand-in for the Dockerfile's base image (python:3.11.13-slim-bookworm) where Docker Hub is out of
# reach but a Debian mirror is not: Debian 12 minbase with its own Python 3.11 and pip, made with
# debootstrap and imported into the local Docker engine. Then:
#
#   sudo bash docker/offline-base.sh                         # prints the tag it built
#   ESJOIN_PYTHON_IMAGE=esjoin/python-base:3.11-bookworm make up BACKEND=emulator-container
#
# Differences from the official image: Debian's Python 3.11.2 (not 3.11.13) at /usr/bin, `python`
# and `pip` linked to it, Debian's PEP 668 marker removed (the image is a single-purpose one).
# The host's CA bundle is copied in and given to pip, so a TLS-inspecting proxy the host trusts is
# trusted inside the build too. Needs root (debootstrap), debootstrap and a running Docker engine.
# Settings: ESJOIN_BASE_TAG (the tag), DEBIAN_MIRROR (default: the machine's apt mirror),
# ESJOIN_BASE_SUITE (default bookworm; trixie gives Python 3.13, which the offline LocalStack image
# needs: docker/localstack-offline/build.sh makes esjoin/python-base:3.13-trixie that way).
set -euo pipefail

SUITE="${ESJOIN_BASE_SUITE:-bookworm}"
TAG="${ESJOIN_BASE_TAG:-esjoin/python-base:3.11-bookworm}"
PACKAGES="python3,python3-pip,python3-venv,ca-certificates,passwd"
HOST_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

die() { echo "offline-base: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (debootstrap needs it)"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
docker info >/dev/null 2>&1 || die "no Docker engine answers (start dockerd)"

mirror="${DEBIAN_MIRROR:-$(awk '$1 == "URIs:" && $2 ~ /\/debian\/?$/ { print $2; exit }' \
  /etc/apt/sources.list.d/*.sources 2>/dev/null || true)}"
work="$(mktemp -d)"
rootfs="$work/rootfs"
cleanup() {  # debootstrap may leave /proc and friends mounted inside the tree: never delete through them
  for mount in $(awk -v root="$rootfs/" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r); do
    umount -l "$mount" || true
  done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

echo "offline-base: debootstrap $SUITE minbase + $PACKAGES (mirror: ${mirror:-debootstrap default})"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" ${mirror:+"$mirror"} >"$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }

ln -sf python3 "$rootfs/usr/bin/python"
[ -e "$rootfs/usr/bin/pip" ] || ln -sf pip3 "$rootfs/usr/bin/pip"
rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
changes=(--change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]')
if [ -f "$HOST_CA_BUNDLE" ]; then
  cp "$HOST_CA_BUNDLE" "$rootfs/etc/ssl/certs/esjoin-host-ca-bundle.crt"
  changes+=(--change 'ENV PIP_CERT=/etc/ssl/certs/esjoin-host-ca-bundle.crt')
fi
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

tar -C "$rootfs" --numeric-owner -cf - . | docker import "${changes[@]}" - "$TAG" >/dev/null
docker run --rm "$TAG" python -c "import sys, ssl; print(sys.version.split()[0], ssl.OPENSSL_VERSION)" >/dev/null \
  || die "the image was imported but its Python does not run"
echo "$TAG"
