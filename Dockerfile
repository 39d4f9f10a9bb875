# syntax=docker/dockerfile:1
# The step image the capi-rollout WorkflowTemplate runs: slim Python, the capi_rollout package and Hera (a
# dependency), a non-root user. Build it (tag = package version, see src/capi_rollout/workflow/image.py):
#   docker build -t "$(.venv/bin/python -m capi_rollout.workflow.image)" .
#   kind load docker-image "$(.venv/bin/python -m capi_rollout.workflow.image)" --name <cluster>
# Base image: a tag here, because no registry was reachable where this was written and a digest is never
# invented. A release (.github/workflows/release.yml, job `base`) resolves the tag to its index digest and builds
# FROM python:3.11-slim-bookworm@sha256:..., recorded in the image's org.opencontainers.image.base.digest label.
# Pin it for a local build: --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest>.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY requirements ./requirements
# Every dependency from the lock, each file checked against its hash (the same lock `make setup` uses);
# the package itself is built without build isolation from the hashed build lock (hatchling).
RUN pip install --no-cache-dir --require-hashes -r requirements/build.txt \
    && pip download --no-cache-dir --require-hashes --no-deps --dest /wheels -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY src ./src
COPY sim ./sim
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp
RUN --mount=type=bind,from=build,source=/src/requirements,target=/requirements \
    --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels --require-hashes -r /requirements/runtime.txt \
    && pip install --no-cache-dir --no-index --no-deps /wheels/capi_rollout-*.whl \
    && groupadd --gid 65532 nonroot \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nonroot
# The WorkflowTemplate runs `python -m capi_rollout.workflow.entry <step> <staged inputs>` (no Hera import at run
# time) with a read-only root filesystem and an emptyDir at /tmp (outputs under /tmp/hera-outputs).
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["capi-rollout"]
CMD ["--help"]
