#!/usr/bin/env bash
# Makes Podman usable as the OS tool's container backend on a CI runner or dev container
# (root, no daemon, no registry access) and creates the default image edgeact/os-default.
#
#   bash scripts/setup-podman.sh            # apt install + config + image
#   EDGEACT_TEST_CONTAINER=podman cargo test --test sandbox_container
#
# What it does, and why:
# - apt-get install podman runc: crun (podman's default runtime on Debian 12) refuses hosts
#   with a hybrid cgroup v1/v2 layout ("cgroups in hybrid mode not supported"); runc works.
# - /etc/containers/containers.conf.d/edgeact.conf: runtime runc, cgroupfs manager, and
#   default ulimits no higher than this host's hard limits (podman's defaults exceed them in
#   containers, and setrlimit then fails: "setrlimit RLIMIT_NOFILE: Operation not permitted").
# - /etc/containers/storage.conf: the overlay driver (native overlayfs); with vfs every
#   container start copies the whole image (~14 s for 400 MB instead of ~0.3 s).
# - The image: no registry is reachable here, so the debootstrap root of `edgeact rootfs
#   build` (Debian + AgentBench's default packages) is imported with `podman import`. With a
#   registry, `podman build -t edgeact/os-default -f scripts/os-default.Dockerfile scripts`
#   builds the Ubuntu image that mirrors AgentBench's instead.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc >/dev/null
fi

mkdir -p /etc/containers/containers.conf.d
nofile=$(ulimit -Hn)
nproc=$(ulimit -Hu)
[ "$nofile" = unlimited ] && nofile=1048576
# runc fails to raise RLIMIT_NPROC to this host's full hard limit; the container's real
# process limit is --pids-limit anyway.
if [ "$nproc" = unlimited ] || [ "$nproc" -gt 4096 ]; then nproc=4096; fi
cat > /etc/containers/containers.conf.d/edgeact.conf <<CONF
# Written by edgeact scripts/setup-podman.sh.
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
if [ ! -f /etc/containers/storage.conf ]; then
    cat > /etc/containers/storage.conf <<CONF
# Written by edgeact scripts/setup-podman.sh.
[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
CONF
fi

image=edgeact/os-default
if podman image inspect "$image" >/dev/null 2>&1; then
    echo "podman: image $image present"
    exit 0
fi
cache=${XDG_CACHE_HOME:-$HOME/.cache}/edgeact/rootfs
if [ ! -x "$cache/bin/bash" ] && [ ! -x "$cache/usr/bin/bash" ]; then
    echo "building the debootstrap root in $cache (edgeact rootfs build)"
    command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    cargo run --release -q -- rootfs build
fi
echo "importing $cache as $image"
tar -C "$cache" --numeric-owner -c . | podman import --change 'CMD ["bash"]' - "$image" >/dev/null
podman run --rm --network none "$image" true
echo "podman: image $image ready"
