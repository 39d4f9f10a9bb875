# syntax=docker/dockerfile:1
# The step image the capi-rollout WorkflowTemplate runs: slim Python, the capi_rollout package and Hera (a
# dependency), a non-root user. Build it (tag = package version, see src/capi_rollout/workflow/image.py):
#   docker build -t "$(.venv/bin/python -m capi_rollout.workflow.image)" .
#   kind load docker-image "$(.venv/bin/python -m capi_rollout.workflow.image)" --name <cluster>
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY sim ./sim
# Wheels for the package and every pinned dependency; the runtime stage installs them without an index.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels capi-rollout \
    && groupadd --gid 65532 nonroot \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nonroot
# The WorkflowTemplate runs `python -m capi_rollout.workflow.entry <step> <staged inputs>` (no Hera import at run
# time) with a read-only root filesystem and an emptyDir at /tmp (outputs under /tmp/hera-outputs).
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["capi-rollout"]
CMD ["--help"]
