#!/usr/bin/env bash
# Sets up a fresh Debian machine for archway: the Debian packages its tests and examples use,
# binfmt_misc mounted, and the npm dependencies. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(docker-registry skopeo podman runc buildah qemu-user-static umoci busybox-static zstd openssl apache2-utils uidmap iproute2 util-linux fuse-overlayfs dpkg-dev time python3 git hostname)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  $SUDO mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || echo "setup: could not mount binfmt_misc; foreign platforms will not run"
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run build --silent
# Debian's qemu-user-static registers most foreign architectures but not 386 on amd64 (nor arm on
# arm64): it assumes the kernel runs those itself, which kernels without 32-bit support do not.
# archway registers whatever this kernel cannot run, with the F flag a build's chroot needs.
$SUDO "$(command -v node)" bin/archway.cjs binfmt --install all >/dev/null || echo "setup: could not register QEMU emulators; foreign platforms may not run"
