"""A fake Talos API for the simulator: one gRPC endpoint per simulated node, served like Talos serves it.

Contract: ``FakeTalosFleet`` runs every endpoint on one private asyncio loop in a background thread, bound
only to loopback addresses (127.x.y.z, port 50000 by default), with real Ed25519 mTLS from
:class:`sim.pki.ClusterPKI`. It speaks the upstream Talos protos (``sim.talos.upstream``, generated at
``make setup``; never the product's) and fakes ``machine.MachineService`` Reboot, Version, Read (boot ID) and
Events, ``cosi.resource.State`` Get and List (MachineStatus, BootID, their ResourceDefinitions), Talos roles,
reboots through Talos's stages (rebooting, down, booting, running not ready, ready — or maintenance, or never)
and maintenance mode, well enough that a real ``talosctl`` works against it (tests/sim/conformance). It never fakes
a real OS, etcd or kubelet.
Opt-in, for a simulator running in a pod: an :class:`Exposer` (``sim.talos.services.ServiceExposer``: one
Kubernetes Service per node) makes each endpoint listen on the pod address and be addressed by a ClusterIP.
"""

from sim.talos.exposure import Exposer, Exposure
from sim.talos.fleet import FakeTalosFleet, RebootStages, loopback_block
from sim.talos.node import FakeTalosNode, RebootOutcome, RebootRecord

__all__ = ["Exposer", "Exposure", "FakeTalosFleet", "FakeTalosNode", "RebootOutcome", "RebootRecord", "RebootStages",
           "loopback_block"]
