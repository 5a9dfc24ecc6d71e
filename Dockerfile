# syntax=docker/dockerfile:1
# geocatalog-worker production image.
#   docker build -t geocatalog-worker:0.1.0 --build-arg VERSION=0.1.0 .
# Stage 1 builds the wheel and a virtualenv with the pinned runtime dependencies (constraints.txt, a pip freeze);
# stage 2 copies only that virtualenv onto a fresh slim base: no compilers, no pip cache, no build tools.
# Every runtime dependency ships manylinux wheels, so no compiler is needed even in the build stage.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Extras of the wheel to install: otel (OpenTelemetry SDK + OTLP exporter, off until OTEL_* ask for it); add
# azure-monitor for Application Insights: --build-arg EXTRAS=otel,azure-monitor (docs/observability.md "Traces").
ARG EXTRAS=otel
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Dependencies first, so that code changes do not invalidate the dependency layer.
COPY constraints.txt pyproject.toml README.md ./
COPY worker ./worker
# PIP_CONSTRAINT also pins the build backend (hatchling) inside pip's isolated build environment.
ENV PIP_CONSTRAINT=/src/constraints.txt
RUN python -m venv --without-pip /opt/venv \
    && python -m pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && for wheel in /tmp/wheels/geocatalog_worker-*.whl; do \
         python -m pip --python /opt/venv/bin/python install --no-compile "${wheel}[${EXTRAS}]"; \
       done \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib \
    && /opt/venv/bin/geocatalog-worker --version

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="geocatalog-worker" \
      org.opencontainers.image.description="Feeds Microsoft Planetary Computer Pro (GeoCatalog) from Azure Service Bus" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.13-slim-bookworm"
# A fixed, non-root uid/gid (10001), matching the Helm chart's runAsUser; no home, no login shell.
RUN groupadd --gid 10001 worker \
    && useradd --uid 10001 --gid 10001 --no-create-home --no-log-init --home-dir /nonexistent \
       --shell /usr/sbin/nologin worker
COPY --from=build /opt/venv /opt/venv
# Read-only root filesystem friendly: nothing is written outside TMPDIR (/tmp, an emptyDir in Kubernetes),
# byte code is compiled at build time and never written at run time.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp \
    GCW_HEALTH_PORT=8080
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
# No HEALTHCHECK: Kubernetes ignores it and probes /healthz and /readyz itself (see the Helm chart).
# Exec form: the worker is PID 1 and receives SIGTERM directly, so it can drain before the grace period ends.
ENTRYPOINT ["geocatalog-worker"]
CMD ["run"]
