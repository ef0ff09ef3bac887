#!/usr/bin/env bash
# Make podman a working container engine on a Debian machine without Docker (as root), and
# build a local Debian bookworm base image with Python 3.11 for machines that reach no
# container registry. Idempotent: each step is skipped when its result is already there.
set -euo pipefail
BASE_IMAGE=${BASE_IMAGE:-localhost/cl-base:bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

fail() { echo "error: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || fail "podman-setup.sh installs packages and writes /etc/containers: run it as root"

if ! command -v podman >/dev/null || ! command -v runc >/dev/null ||
  ! command -v debootstrap >/dev/null; then
  command -v apt-get >/dev/null || fail "no apt-get: install podman, runc and debootstrap yourself"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    podman runc debootstrap >/dev/null
fi

# crun refuses hybrid cgroups (v1 with v2 mounted) and, where root lacks CAP_SYS_RESOURCE,
# raising the open-files and process limits; runc with these limits works on both.
conf=/etc/containers/containers.conf.d/50-cl.conf
if [ ! -f "$conf" ]; then
  mkdir -p "$(dirname "$conf")"
  cat >"$conf" <<'CONF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"
CONF
fi

if ! podman image exists "$BASE_IMAGE"; then
  root=$(mktemp -d)
  trap 'rm -rf --one-file-system "$root"' EXIT  # not into /proc, /sys a failed run left mounted
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" "$MIRROR" >/dev/null
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  tar -C "$root" -c . | podman import --quiet --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
fi
podman run --rm "$BASE_IMAGE" python3 -c "" || fail "podman cannot run a container here (see above)"
echo "podman ready; base image $BASE_IMAGE"
