"""The Talos API adapter: talosconfig parsing, TLS set-up and an async/sync client for Reboot, Version and
the MachineStatus resource.

Contract: ``grpclib`` over the standard ``ssl`` module (Talos certificates are Ed25519, which grpcio cannot
do); every call has a timeout; results are values (:class:`NodeProbe`, :class:`RebootResult`) that tell
running / booting / maintenance / unreachable / denied apart instead of raising. Key material never
appears in logs or reprs. The protobuf subset is hand-written (``proto/``, built at runtime by
:mod:`.messages`); no generated code.
"""

from capi_rollout.adapters.talos.client import TalosClient
from capi_rollout.adapters.talos.config import TalosConfig, TalosConfigError, parse_talosconfig
from capi_rollout.adapters.talos.outcomes import NodeProbe, ProbeState, RebootResult
from capi_rollout.adapters.talos.sync import SyncTalosClient

__all__ = [
    "NodeProbe",
    "ProbeState",
    "RebootResult",
    "SyncTalosClient",
    "TalosClient",
    "TalosConfig",
    "TalosConfigError",
    "parse_talosconfig",
]
