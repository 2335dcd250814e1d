# edgeact's default image for `--backend docker|podman`: the equivalent of AgentBench's
# `local-os/default` (its res/dockerfiles/default: Ubuntu + the packages below), plus procps
# (`pgrep`/`ps`, which some check scripts use). Needs a registry for the ubuntu base:
#   docker build -t edgeact/os-default -f scripts/os-default.Dockerfile scripts
# Offline, the backend imports the `edgeact rootfs build` root under the same name instead.
FROM ubuntu
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y python3 python3-pip git vim curl wget unzip zip tree procps \
    && rm -rf /var/lib/apt/lists/*
CMD ["bash"]
