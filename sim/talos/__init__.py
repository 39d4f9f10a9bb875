"""A fake Talos API for the simulator: one gRPC endpoint per simulated node, served like Talos serves it.

Contract: ``FakeTalosFleet`` runs every endpoint on one private asyncio loop in a background thread, bound
only to loopback addresses (127.x.y.z, port 50000 by default), with real Ed25519 mTLS from
:class:`sim.pki.ClusterPKI`. It fakes ``machine.MachineService/Reboot``, ``machine.MachineService/Version`` and
``cosi.resource.State/Get`` for MachineStatus, Talos roles, reboots (endpoint down, new boot ID, back up —
running, in maintenance, or never) and maintenance mode. It never fakes a real OS, etcd or kubelet.
Opt-in, for a simulator running in a pod: an :class:`Exposer` (``sim.talos.services.ServiceExposer``: one
Kubernetes Service per node) makes each endpoint listen on the pod address and be addressed by a ClusterIP.
"""

from sim.talos.exposure import Exposer, Exposure
from sim.talos.fleet import FakeTalosFleet, loopback_block
from sim.talos.node import FakeTalosNode, RebootOutcome, RebootRecord

__all__ = ["Exposer", "Exposure", "FakeTalosFleet", "FakeTalosNode", "RebootOutcome", "RebootRecord",
           "loopback_block"]
