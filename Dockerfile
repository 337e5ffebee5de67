# syntax=docker/dockerfile:1
#
# The hourglass image: every component (`hourglass api|producer|worker|claimer|operator|
# migrate`) and the runner of uploaded binaries. For a binary job, the Kubernetes executor
# runs `hourglass fetch-binary DIGEST /hourglass/bin/task` in an init container and then
# `/hourglass/bin/task` in the main container, so the image keeps a shell (/bin/sh) and a
# writable /hourglass/bin (normally an emptyDir mounted over it).
#
#   docker build -t hourglass:0.1.0 .
#   kind load docker-image hourglass:0.1.0
#   helm install hourglass charts/hourglass
#
# Build stage: a wheel of the project, installed into a venv at the path it keeps in the
# final stage (a venv's scripts name their interpreter by absolute path).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

# Created before the sources are copied: `python -m` from a folder that holds `operator/`
# must never see it (see operator/README.md; it is a namespace folder, but be safe).
RUN python -m venv /opt/build-tools \
    && /opt/build-tools/bin/pip install "build>=1.2" \
    && python -m venv /opt/hourglass

WORKDIR /src
# Only what the wheel is made of: hourglass/api, hourglass/workers, hourglass/operator and
# hourglass/cases and hourglass/console are symlinks to the top-level folders, which are
# copied beside it (without cases/ the operator's cases and `hourglass serve` had no code in
# the image);
# README.md is the readme.
COPY pyproject.toml README.md ./
COPY hourglass/ hourglass/
COPY api/ api/
COPY workers/ workers/
COPY operator/ operator/
COPY cases/ cases/
COPY console/ console/

# The wheel and its dependencies go into the venv; then pip leaves it (no installers at run
# time), and the entry point must start.
RUN /opt/build-tools/bin/python -m build --wheel --outdir /dist . \
    && /opt/hourglass/bin/pip install /dist/hourglass-*.whl \
    && /opt/hourglass/bin/pip uninstall --yes pip \
    && /opt/hourglass/bin/hourglass --help >/dev/null


FROM ${PYTHON_IMAGE} AS runtime

ARG HOURGLASS_UID=10001

LABEL org.opencontainers.image.title="hourglass" \
      org.opencontainers.image.description="A Kubernetes-native job scheduler: cron, intervals and one-shot jobs, run at least once." \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/hourglass/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# No build or packaging tools at run time: drop the base image's own pip/setuptools/wheel.
# A fixed, non-root user (the chart's securityContext runs as the same UID), and the folder
# the runner's init container fetches a binary into.
RUN python -m pip uninstall --yes pip setuptools wheel >/dev/null 2>&1 || true; \
    groupadd --gid "${HOURGLASS_UID}" hourglass \
    && useradd --no-log-init --uid "${HOURGLASS_UID}" --gid hourglass \
        --home-dir /home/hourglass --create-home --shell /usr/sbin/nologin hourglass \
    && install --directory --owner hourglass --group hourglass --mode 0755 /hourglass /hourglass/bin

COPY --from=build /opt/hourglass /opt/hourglass

USER ${HOURGLASS_UID}:${HOURGLASS_UID}
WORKDIR /home/hourglass

# gRPC API (hourglass api --listen 0.0.0.0:50051).
EXPOSE 50051

ENTRYPOINT ["hourglass"]
CMD ["--help"]
