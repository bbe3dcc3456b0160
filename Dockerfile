# syntax=docker/dockerfile:1
# spillway in a container (docs/operating.md "Docker").
#
#   docker build -t spillway .
#   docker run --gpus all -p 8000:8000 -p 50051:50051 -v /path/to/models:/models:ro spillway
#
# Build stage: the same commands as the README (scripts/setup.sh installs the Debian packages
# and builds build/). Runtime stage: the binary, its shared libraries, a non-root user.
#
# NOTE(metrics): NVIDIA publishes no Debian images of nvidia/cuda, and scripts/setup.sh is
# written for Debian 12 (its package names, e.g. libboost1.81-dev, do not exist on the Ubuntu
# bases). So both stages are Debian 12 with the CUDA toolkit from NVIDIA's own Debian 12 apt
# repository — the same packages the nvidia/cuda images install. CUDA_VERSION selects it.
ARG CUDA_VERSION=12-6

FROM debian:12 AS build
ARG CUDA_VERSION
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends ca-certificates curl \
    && curl -fsSL -o /tmp/keyring.deb \
       https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb \
    && dpkg -i /tmp/keyring.deb && rm /tmp/keyring.deb \
    && apt-get update -qq && apt-get install -y -qq --no-install-recommends \
       cuda-toolkit-${CUDA_VERSION} \
    && rm -rf /var/lib/apt/lists/*
ENV PATH=/usr/local/cuda/bin:${PATH}
WORKDIR /src
COPY . .
# The build steps (CI checks that this is scripts/setup.sh, as in the README). The default
# model it downloads stays in this stage; the runtime image mounts or downloads its own.
ENV SPILLWAY_CACHE=/tmp/spillway-cache
RUN rm -rf build .venv && scripts/setup.sh

FROM debian:12-slim AS runtime
ARG CUDA_VERSION
# Runtime libraries of build/bin/spillway (what `ldd` lists; apt pulls in their own), the CUDA
# runtime and cuBLAS (the CUDA backend's GEMMs, docs/gpu.md); curl for the model download and
# the health check.
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends ca-certificates curl \
    && curl -fsSL -o /tmp/keyring.deb \
       https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb \
    && dpkg -i /tmp/keyring.deb && rm /tmp/keyring.deb \
    && apt-get update -qq && apt-get install -y -qq --no-install-recommends \
       cuda-cudart-${CUDA_VERSION} libcublas-${CUDA_VERSION} \
       libspdlog1.10 libfmt9 libabsl20220623 libboost-json1.81.0 \
       libgrpc++1.51 libgrpc29 libprotobuf32 libprometheus-cpp-core1.0 \
    && rm -rf /var/lib/apt/lists/*
# NVIDIA container runtime: expose the GPU's compute libraries to the container.
ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility

RUN useradd --system --uid 10001 --create-home --home-dir /home/spillway spillway \
    && mkdir -p /models /cache && chown spillway:spillway /cache
COPY --from=build /src/build/bin/spillway /usr/local/bin/spillway
COPY deploy/docker/entrypoint.sh /usr/local/bin/spillway-entrypoint
USER spillway
ENV SPILLWAY_CACHE=/cache SPILLWAY_HOST=0.0.0.0 SPILLWAY_PORT=8000 SPILLWAY_GRPC_PORT=50051
VOLUME ["/cache"]
EXPOSE 8000 50051
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${SPILLWAY_PORT}/health" >/dev/null || exit 1
# SIGTERM drains (readiness off, in-flight requests finish within --drain-timeout).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/spillway-entrypoint"]
