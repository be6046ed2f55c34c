# galmerge inference image: `galmerge classify` on ONNX Runtime, no torch.
#
#   docker build -t galmerge .                                   # GPU (CUDA 12 + cuDNN 9)
#   docker build -t galmerge:cpu --build-arg GALMERGE_EXTRA=cpu \
#                --build-arg BASE_IMAGE=debian:bookworm-slim .   # CPU only, ~5x smaller
#   docker run --rm --gpus all -v "$PWD:/data" galmerge classify \
#       --catalog /data/sdss.csv --output /data/out.parquet
#
# BASE_IMAGE: the galmerge `gpu` extra pins onnxruntime-gpu >=1.20,<1.27, the
# CUDA 12 / cuDNN 9 line (1.27+ moved to CUDA 13, which needs drivers >= R580).
# ORT built with CUDA 12.x runs on any CUDA 12.x runtime (minor-version
# compatibility), and cuDNN 8 and 9 builds are mutually incompatible, hence a
# `12.x-cudnn` (= cuDNN 9) runtime image. Ubuntu 24.04 gives Python 3.12
# (ORT >= 1.24 needs Python >= 3.11; Ubuntu 22.04's 3.10 cannot install it).
# Any Debian/Ubuntu base with python3 (or apt to install it) works: CI builds
# this file on a Debian 12 rootfs made with mmdebstrap (docker/build-and-smoke.sh).
ARG BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------- build stage
FROM ${BASE_IMAGE} AS build

# Python is installed only if the base lacks it (CUDA images have none).
# Package versions come from the base image's release; pinning them would
# tie this file to one distribution release.
# hadolint ignore=DL3008
RUN if ! python3 -c "import venv, ensurepip" 2>/dev/null; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
           python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/galmerge/venv

ENV PATH=/opt/galmerge/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# `gpu` (onnxruntime-gpu) or `cpu` (onnxruntime); never both (the CUDA provider
# disappears when both are installed).
ARG GALMERGE_EXTRA=gpu

# Dependencies first, from pyproject.toml alone, so that this layer is reused
# while only the galmerge sources change.
WORKDIR /src
COPY pyproject.toml docker/pyproject_requirements.py ./
# Dask is included, so the same image also serves as a Dask worker
# (`docker run --entrypoint dask galmerge worker tcp://scheduler:8786`).
RUN python3 pyproject_requirements.py pyproject.toml "${GALMERGE_EXTRA}" dask > requirements.txt
# PIP_CERT: pip's own CA bundle does not know a site's extra CAs (an
# intercepting proxy); the system bundle, when present, does.
RUN if [ -f /etc/ssl/certs/ca-certificates.crt ]; then \
        export PIP_CERT=/etc/ssl/certs/ca-certificates.crt; fi \
    && pip install -r requirements.txt

COPY README.md ./
# The package carries the shipped models as package data (galmerge/models/).
COPY galmerge ./galmerge
RUN if [ -f /etc/ssl/certs/ca-certificates.crt ]; then \
        export PIP_CERT=/etc/ssl/certs/ca-certificates.crt; fi \
    && pip install --no-deps . \
    && pip check

# -------------------------------------------------------------- runtime stage
FROM ${BASE_IMAGE}

# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && useradd --no-log-init --uid 10001 --user-group --create-home --home-dir /home/galmerge \
       --shell /usr/sbin/nologin galmerge \
    && mkdir -p /data && chown galmerge:galmerge /data

COPY --from=build /opt/galmerge/venv /opt/galmerge/venv
# The shipped models and the bundled example catalogue (a self-test:
# `galmerge classify --catalog /opt/galmerge/catalogs/sdss_example/sdss_example.csv`).
COPY galmerge/models /opt/galmerge/models
COPY catalogs/sdss_example /opt/galmerge/catalogs/sdss_example

ARG GALMERGE_EXTRA=gpu
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="galmerge" \
      org.opencontainers.image.description="Find merging galaxies in survey catalogues: DeepMerge II models on ONNX Runtime (galmerge classify), ${GALMERGE_EXTRA} build" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/galmerge/galmerge" \
      org.opencontainers.image.licenses="BSD-3-Clause" \
      io.galmerge.extra="${GALMERGE_EXTRA}"

ENV PATH=/opt/galmerge/venv/bin:$PATH \
    GALMERGE_MODELS=/opt/galmerge/models \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# Numeric, so that runAsNonRoot-style checks can verify it without /etc/passwd.
USER 10001:10001
WORKDIR /data

HEALTHCHECK --interval=5m --timeout=60s --start-period=30s --retries=2 \
    CMD ["galmerge", "doctor"]

ENTRYPOINT ["galmerge"]
CMD ["--help"]
