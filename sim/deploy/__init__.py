"""Run the simulator inside a cluster: manifests (``sim.deploy.manifests``) and their rendered default.

Contract: re-exports the pure builders; ``python -m sim.deploy [--check]`` (re)writes or checks
``sim/deploy/simulator.yaml``.
"""

from sim.deploy.manifests import (
    NAME,
    POD_LABELS,
    READY_FILE,
    SIM_IMAGE,
    SIM_IMAGE_REPOSITORY,
    deployment,
    labels_arg,
    manifests,
    render,
    sim_image,
)

__all__ = ["NAME", "POD_LABELS", "READY_FILE", "SIM_IMAGE", "SIM_IMAGE_REPOSITORY", "deployment", "labels_arg",
           "manifests", "render", "sim_image"]
