"""The informer cache against a real kube-apiserver: it syncs, follows changes, and stays within a few requests."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client

from capi_rollout.adapters.informer import ClusterCache, Snapshot, cluster_cache
from capi_rollout.adapters.kube import Kube
from capi_rollout.domain.model import CLUSTER_NAME_LABEL
from capi_rollout.domain.params import parse_params
from capi_rollout.ledger_store import MemoryLedgerStore
from capi_rollout.rollout_loop import RolloutLoop
from envtest.server import LocalAPIServer
from sim import objects as o
from tests.product.test_kube_adapter import seed

pytestmark = pytest.mark.apiserver

WAIT = 10.0  # bound for every condition below; they normally hold within milliseconds


def names(objs: Any) -> list[str]:
    return [m["metadata"]["name"] for m in objs]


def test_the_cache_syncs_with_the_clusters_own_objects_only(apiserver: LocalAPIServer, kube_namespace: str) -> None:
    seed(apiserver, "v1.14", kube_namespace, "alpha")
    seed(apiserver, "v1.14", kube_namespace, "beta")
    with ClusterCache(Kube(apiserver.api_client()), kube_namespace, "alpha", label=CLUSTER_NAME_LABEL) as cache:
        assert cache.wait_until(lambda s: True, WAIT), f"not synced: {cache.failure}"
        snap = cache.snapshot()
        assert cache.failure is None
    assert snap.cluster is not None and snap.cluster["metadata"]["name"] == "alpha"
    assert names(snap.clusters) == ["alpha"]
    assert names(snap.control_planes) == ["alpha-cp"]
    assert names(snap.deployments) == ["alpha-workers"]
    assert names(snap.machines) == ["alpha-cp-a"]


def test_a_create_a_modify_and_a_delete_show_up_without_further_lists(apiserver: LocalAPIServer,
                                                                      kube_namespace: str) -> None:
    live = seed(apiserver, "v1.14", kube_namespace, "gamma")
    api = client.CustomObjectsApi(apiserver.admin)
    with ClusterCache(Kube(apiserver.api_client()), kube_namespace, "gamma", label=CLUSTER_NAME_LABEL) as cache:
        assert cache.wait_until(lambda s: True, WAIT), f"not synced: {cache.failure}"
        while cache.wait(0.2):  # the initial lists woke it; drain
            pass
        requests = dict(cache.requests)
        assert requests == {"clusters": 2, "taloscontrolplanes": 2, "machinedeployments": 2, "machines": 2}

        second = dict(live, metadata={k: v for k, v in live["metadata"].items()
                                      if k in ("labels", "ownerReferences", "namespace")} | {"name": "gamma-cp-b"})
        second.pop("status", None)
        apiserver.apply_manifests([second], namespace=kube_namespace)
        assert cache.wait(WAIT) is True
        assert cache.wait_until(lambda s: names(s.machines) == ["gamma-cp-a", "gamma-cp-b"], WAIT)

        api.patch_namespaced_custom_object_status(o.CAPI_GROUP, "v1beta2", kube_namespace, "machines", "gamma-cp-a",
                                                  {"status": {"phase": "Running"}})

        def running(s: Snapshot) -> bool:
            return any(m["metadata"]["name"] == "gamma-cp-a" and (m.get("status") or {}).get("phase") == "Running"
                       for m in s.machines)

        assert cache.wait_until(running, WAIT)
        api.delete_namespaced_custom_object(o.CAPI_GROUP, "v1beta2", kube_namespace, "machines", "gamma-cp-b")
        assert cache.wait_until(lambda s: names(s.machines) == ["gamma-cp-a"], WAIT)
        assert cache.requests == requests, "events alone keep the cache current: no list, no new watch"


def test_a_machine_deleted_through_the_adapter_shows_deleting_by_uid(apiserver: LocalAPIServer,
                                                                     kube_namespace: str) -> None:
    live = seed(apiserver, "v1.14", kube_namespace, "delta")
    api = client.CustomObjectsApi(apiserver.admin)
    api.patch_namespaced_custom_object(o.CAPI_GROUP, "v1beta2", kube_namespace, "machines", "delta-cp-a",
                                       {"metadata": {"finalizers": ["test.capi-rollout/hold"]}})
    kube = Kube(apiserver.api_client())
    uid = live["metadata"]["uid"]
    with ClusterCache(kube, kube_namespace, "delta", label=CLUSTER_NAME_LABEL) as cache:
        assert cache.wait_until(lambda s: True, WAIT)
        assert not cache.snapshot().shows_deleting(uid)
        assert kube.delete_machine(kube_namespace, "delta-cp-a", uid) is True
        assert cache.wait_until(lambda s: s.shows_deleting(uid), WAIT)
        (m,) = cache.snapshot().machines
        assert m["metadata"]["deletionTimestamp"]
    api.patch_namespaced_custom_object(o.CAPI_GROUP, "v1beta2", kube_namespace, "machines", "delta-cp-a",
                                       {"metadata": {"finalizers": None}})


def test_stopping_the_cache_ends_every_informer_thread_promptly(apiserver: LocalAPIServer,
                                                                kube_namespace: str) -> None:
    seed(apiserver, "v1.14", kube_namespace, "eps")
    with ClusterCache(Kube(apiserver.api_client()), kube_namespace, "eps", label=CLUSTER_NAME_LABEL) as cache:
        assert cache.wait_until(lambda s: True, WAIT)
        start = time.monotonic()
    assert time.monotonic() - start < 10.0, "open watches must be shut down, not waited out (their timeout is 60 s)"
    assert not any(i._thread.is_alive() for i in cache.informers)
    assert not cache.synced


def test_the_runner_sees_a_machine_it_deleted_as_deleting_in_the_very_next_evaluation(
        apiserver: LocalAPIServer, kube_namespace: str) -> None:
    live = seed(apiserver, "v1.14", kube_namespace, "zeta")
    client.CoreV1Api(apiserver.admin).create_namespaced_secret(kube_namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="zeta-talosconfig", labels={o.CAPI_CLUSTER_LABEL: "zeta"}),
        data={"talosconfig": "Y29udGV4dDogemV0YQo="}))
    api = client.CustomObjectsApi(apiserver.admin)
    api.patch_namespaced_custom_object(o.CAPI_GROUP, "v1beta2", kube_namespace, "machines", "zeta-cp-a",
                                       {"metadata": {"finalizers": ["test.capi-rollout/hold"]}})
    kube = Kube(apiserver.api_client())
    params = parse_params({"clusterName": "zeta", "clusterNamespace": kube_namespace, "pollInterval": "1s",
                           "stallTimeout": "4s"})
    runner = RolloutLoop(params=params, kube=kube, store=MemoryLedgerStore())
    runner.resolve()
    uid = live["metadata"]["uid"]
    with cluster_cache(kube, kube_namespace, "zeta", label=CLUSTER_NAME_LABEL) as cache:
        assert cache.wait_until(lambda s: True, WAIT), f"not synced: {cache.failure}"
        _, _, _, before = runner.observe(cache=cache)
        assert runner.last_read == "cache" and [m.deleting for m in before.machines] == [False]
        assert kube.delete_machine(kube_namespace, "zeta-cp-a", uid) is True
        assert runner.await_deletion(cache, uid) is True
        _, _, _, after = runner.observe(cache=cache)
        assert runner.last_read == "cache" and [m.deleting for m in after.machines] == [True]
    api.patch_namespaced_custom_object(o.CAPI_GROUP, "v1beta2", kube_namespace, "machines", "zeta-cp-a",
                                       {"metadata": {"finalizers": None}})


def test_a_watch_from_an_expired_resource_version_gets_410_from_the_real_server_and_lists_again(
        apiserver: LocalAPIServer, kube_namespace: str) -> None:
    import threading

    from capi_rollout.adapters.informer import Informer, Resource
    from capi_rollout.adapters.reflection import Reflection

    seed(apiserver, "v1.14", kube_namespace, "zeta")
    resource = Resource("cluster.x-k8s.io", "v1beta2", "machines", label_selector="cluster.x-k8s.io/cluster-name=zeta")
    informer = Informer(Kube(apiserver.api_client()), kube_namespace, resource, on_change=lambda: None,
                        lock=threading.Condition())
    informer.reflection = Reflection(resource_version="1")  # far older than the server's watch cache holds
    informer.start()
    try:
        deadline = time.monotonic() + WAIT
        while not (informer.synced and informer.lists) and time.monotonic() < deadline:
            time.sleep(0.05)  # bounded above; the informer runs in its own thread
        assert informer.synced and informer.lists == 1, (informer.lists, informer.watches, informer.failure)
        assert informer.watches >= 2  # the one the server refused with 410, then the one after the list
        assert names(informer.reflection.items) == ["zeta-cp-a"]
        assert informer.reflection.resource_version not in (None, "1")
    finally:
        informer.stop()
