#!/usr/bin/env bash
# archway's main job on an embedded default: no registry and nothing else running.
# 1. registers QEMU emulators, 2. builds a busybox base image for three platforms from Debian's
# packages (with archway itself), 3. builds examples/hello for the same platforms into the local
# store, 4. runs the result for two foreign platforms.
set -euo pipefail
cd "$(dirname "$0")/.."
archway() { bin/archway "$@"; }
PLATFORMS=${PLATFORMS:-linux/amd64,linux/arm64,linux/arm/v7}
archway binfmt --install arm64,arm,ppc64le,s390x,386 >/dev/null
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
node dist/test/support/make-busybox-context.js "$ctx" "$PLATFORMS"
archway build --progress plain --platform "$PLATFORMS" -t archway-example/busybox "$ctx"
archway build --progress plain --platform "$PLATFORMS" -t hello examples/hello
archway images
for p in linux/arm64 linux/arm/v7; do
  echo "--- archway run --platform $p hello"
  archway run --platform "$p" hello
done
