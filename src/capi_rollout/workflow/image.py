"""The step image: its repository and its tag, both from one place (the package version).

Contract: constants only, no I/O. ``IMAGE`` is what the WorkflowTemplate runs and what the Dockerfile's
build command tags (``docker build -t "$(python -m capi_rollout.workflow.image)" .``).
"""

from __future__ import annotations

from capi_rollout import __version__

IMAGE_REPOSITORY = "ghcr.io/capi-rollout/capi-rollout"
IMAGE_TAG = __version__
IMAGE = f"{IMAGE_REPOSITORY}:{IMAGE_TAG}"

if __name__ == "__main__":  # pragma: no cover - a one-line helper for shell scripts
    print(IMAGE)
