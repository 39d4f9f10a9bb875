"""LocalAPIServer: a real etcd + kube-apiserver on free loopback ports (the controller-runtime "envtest" model).

Contract:
- No kubelet, no controllers: nothing garbage-collects, finalizes namespaces or creates ServiceAccount tokens
  on its own (TokenRequest works). Deleted namespaces stay Terminating, so tests use unique namespaces.
- RBAC authorization is on; the admin kubeconfig authenticates with a client certificate in ``system:masters``;
  the service-account issuer and keys are configured, so TokenRequest mints real tokens.
- ``start()`` generates the PKI, starts etcd and kube-apiserver, waits for ``/readyz`` and installs the selected
  CRD set (server-side apply, then waits for Established and for discovery). Every wait has a deadline. The first
  server for a given CRD set saves etcd's data as a template (``envtest.template``); later ones start from a
  copy of it and only wait until the CRDs are served (seconds instead of ~40 s for the large Argo CRDs).
- ``stop()`` (also ``__exit__``, and ``atexit`` as a last resort) ends both process groups and removes the
  work directory it created. It is idempotent.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import shutil
import signal
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from kubernetes import config as kube_config
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from capi_rollout import waiting
from envtest import assets as assets_module
from envtest import kubeconfig, pki, rest, template
from envtest.processes import (
    LOOPBACK,
    POLL_INTERVAL_SECONDS,
    ChildProcess,
    ProcessFailedError,
    free_port,
    log_tail,
)

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
START_TIMEOUT_SECONDS = 60.0
CRD_TIMEOUT_SECONDS = 60.0
_PORT_ATTEMPTS = 3


class LocalAPIServer:
    """etcd + kube-apiserver for tests; use as a context manager or call ``start()`` / ``stop()``."""

    def __init__(
        self,
        *,
        capi_line: str = "v1.14",
        extra_crds: Iterable[str] = assets_module.DEFAULT_EXTRA_CRDS,
        workdir: Path | None = None,
        binaries: assets_module.Assets | None = None,
        start_timeout: float = START_TIMEOUT_SECONDS,
        etcd_template: bool = True,
    ) -> None:
        self.capi_line = capi_line
        self.extra_crds = tuple(extra_crds)
        self._given_workdir = workdir
        self._binaries = binaries
        self._start_timeout = start_timeout
        self._use_template = etcd_template
        self._workdir: Path | None = None
        self._pki: pki.Pki | None = None
        self._etcd: ChildProcess | None = None
        self._apiserver: ChildProcess | None = None
        self._etcd_url = ""
        self._port = 0
        self._admin: ApiClient | None = None
        self._mapper: rest.ResourceMapper | None = None
        self._token_files = 0
        self.timings: dict[str, float] = {}

    # -- lifecycle -------------------------------------------------------------------------------------------

    def __enter__(self) -> LocalAPIServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> LocalAPIServer:
        """Start etcd and kube-apiserver, wait until ready, install the CRDs. Stops everything on failure.

        With ``etcd_template`` (the default) the first server for a CRD set saves etcd's data once the CRDs are
        installed; later servers start from that copy and only wait until the CRDs are served.
        """
        if self._apiserver is not None:
            raise RuntimeError("LocalAPIServer already started")
        started = time.monotonic()
        crds = assets_module.crd_paths(self.capi_line, self.extra_crds)
        binaries = self._binaries or assets_module.binaries()
        template_dir = template.directory(assets_module.cache_dir(), template.key(assets_module.versions(), crds))
        seeded = template.load(template_dir) if self._use_template else None
        if self._use_template:
            template.prune(template_dir.parent, keep=[template_dir.name])  # other pins' and CRD sets' leftovers
            if seeded is not None:
                template.touch(template_dir)
        atexit.register(self.stop)
        try:
            self._workdir = self._given_workdir or Path(tempfile.mkdtemp(prefix="capi-rollout-envtest-"))
            self._workdir.mkdir(parents=True, exist_ok=True)
            self._pki = pki.generate(self._workdir / "pki")
            if seeded is not None:
                try:
                    self._boot(binaries, seed=template_dir / "data", started=started)
                    self._wait_served(seeded)
                except (ProcessFailedError, TimeoutError):
                    # An unusable template (e.g. from an interrupted save): drop it and install from scratch.
                    template.discard(template_dir)
                    self._stop_processes()
                    seeded = None
            if seeded is None:
                self._boot(binaries, seed=None, started=started)
                answers = self.install_crds(crds)
                if self._use_template:
                    self._save_template(template_dir, [template.CrdRef.from_crd(crd) for crd in answers])
            self.timings["crds_ready_seconds"] = time.monotonic() - started
            self.timings["from_template"] = float(seeded is not None)
        except BaseException:
            self.stop()
            raise
        return self

    def _boot(self, binaries: assets_module.Assets, *, seed: Path | None, started: float) -> None:
        assert self._pki is not None
        self._start_etcd(binaries.etcd, seed=seed)
        self._start_apiserver_on_free_port(binaries.kube_apiserver)
        self.timings["ready_seconds"] = time.monotonic() - started
        kubeconfig.write_cert_kubeconfig(
            self.kubeconfig_path,
            server=self.url,
            ca_cert=self._pki.ca_cert,
            client_cert=self._pki.admin_cert,
            client_key=self._pki.admin_key,
        )
        self._admin = self.api_client()
        self._mapper = rest.ResourceMapper(self._admin)

    def _save_template(self, template_dir: Path, crds: list[template.CrdRef]) -> None:
        """Stop both processes cleanly, copy etcd's data into the template, start both again on the same ports."""
        assert self._etcd is not None and self._apiserver is not None
        apiserver_binary = Path(self._apiserver.argv[0])
        self._apiserver.stop()
        self._etcd.stop()
        template.save(self.workdir / "etcd-data", crds, template_dir)
        template.touch(template_dir)
        self._etcd.start()
        self._etcd.wait_until(
            functools.partial(_etcd_healthy, self._etcd_url), timeout=self._start_timeout, what="healthy"
        )
        self._apiserver = self._launch_apiserver(apiserver_binary, self._port)
        self._wait_apiserver_ready(self._apiserver)
        self._wait_served(crds)

    def _wait_served(self, crds: Iterable[template.CrdRef]) -> None:
        """Wait (bounded) until discovery serves every version of every CRD."""
        pending = [(f"{crd.group}/{version}", crd.kind) for crd in crds for version in crd.versions]

        def served() -> bool:
            while pending:
                self.mapper.resolve(*pending[0])  # LookupError: not yet
                pending.pop(0)
            return True

        waiting.wait_until(served, timeout=CRD_TIMEOUT_SECONDS, interval=POLL_INTERVAL_SECONDS,
                           what="the CRDs in discovery", retry_on=(LookupError,))

    def _stop_processes(self) -> None:
        if self._admin is not None:
            with contextlib.suppress(Exception):
                cast(Any, self._admin).close()
            self._admin = None
        for process in (self._apiserver, self._etcd):
            if process is not None:
                process.stop()
        self._apiserver = self._etcd = None

    def stop(self) -> None:
        """Stop kube-apiserver and etcd, close the admin client, remove the work directory if we made it."""
        atexit.unregister(self.stop)
        self._stop_processes()
        if self._workdir is not None and self._given_workdir is None:
            shutil.rmtree(self._workdir, ignore_errors=True)
        self._workdir = None

    def restart_apiserver(self) -> None:
        """Kill kube-apiserver (SIGKILL, as a crash) and start it again on the same port, keeping etcd."""
        if self._apiserver is None:
            raise RuntimeError("LocalAPIServer is not running")
        binary = Path(self._apiserver.argv[0])
        self._apiserver.stop(sig=signal.SIGKILL)
        self._apiserver = self._launch_apiserver(binary, self._port)
        self._wait_apiserver_ready(self._apiserver)

    # -- processes -------------------------------------------------------------------------------------------

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise RuntimeError("LocalAPIServer is not running")
        return self._workdir

    def _start_etcd(self, binary: Path, *, seed: Path | None) -> None:
        for attempt in range(_PORT_ATTEMPTS):
            client_port, peer_port = free_port(), free_port()
            client_url, peer_url = f"http://{LOOPBACK}:{client_port}", f"http://{LOOPBACK}:{peer_port}"
            data_dir = self.workdir / "etcd-data"
            shutil.rmtree(data_dir, ignore_errors=True)
            if seed is not None:
                shutil.copytree(seed, data_dir)
            process = ChildProcess(
                "etcd",
                [
                    str(binary),
                    "--name=envtest",
                    f"--data-dir={data_dir}",
                    f"--listen-client-urls={client_url}",
                    f"--advertise-client-urls={client_url}",
                    f"--listen-peer-urls={peer_url}",
                    f"--initial-advertise-peer-urls={peer_url}",
                    f"--initial-cluster=envtest={peer_url}",
                    "--unsafe-no-fsync=true",
                    "--log-level=warn",
                ],
                self.workdir / "etcd.log",
            )
            self._etcd = process
            process.start()
            try:
                self.timings["etcd_ready_seconds"] = process.wait_until(
                    functools.partial(_etcd_healthy, client_url), timeout=self._start_timeout, what="healthy"
                )
            except ProcessFailedError:
                process.stop()
                if attempt + 1 < _PORT_ATTEMPTS and "address already in use" in _log(process):
                    continue
                raise
            self._etcd_url = client_url
            return

    def _apiserver_argv(self, binary: Path, port: int) -> list[str]:
        assert self._pki is not None
        return [
            str(binary),
            f"--etcd-servers={self._etcd_url}",
            f"--bind-address={LOOPBACK}",
            f"--advertise-address={LOOPBACK}",
            f"--secure-port={port}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={self._pki.serving_cert}",
            f"--tls-private-key-file={self._pki.serving_key}",
            f"--client-ca-file={self._pki.ca_cert}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--api-audiences={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={self._pki.sa_public_key}",
            f"--service-account-signing-key-file={self._pki.sa_private_key}",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--allow-privileged=true",
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            "--v=0",
        ]

    def _launch_apiserver(self, binary: Path, port: int) -> ChildProcess:
        process = ChildProcess(
            "kube-apiserver", self._apiserver_argv(binary, port), self.workdir / "kube-apiserver.log"
        )
        process.start()
        return process

    def _start_apiserver_on_free_port(self, binary: Path) -> None:
        for attempt in range(_PORT_ATTEMPTS):
            port = free_port()
            process = self._launch_apiserver(binary, port)
            self._apiserver, self._port = process, port
            try:
                self._wait_apiserver_ready(process)
            except ProcessFailedError:
                process.stop()
                if attempt + 1 < _PORT_ATTEMPTS and "address already in use" in _log(process):
                    continue
                raise
            return

    def _ssl_context(self) -> ssl.SSLContext:
        assert self._pki is not None
        context = ssl.create_default_context(cafile=str(self._pki.ca_cert))
        context.load_cert_chain(str(self._pki.admin_cert), str(self._pki.admin_key))
        return context

    def _wait_apiserver_ready(self, process: ChildProcess) -> None:
        context = self._ssl_context()
        url = f"{self.url}/readyz"
        self.timings["apiserver_ready_seconds"] = process.wait_until(
            lambda: _https_ok(url, context), timeout=self._start_timeout, what="ready (/readyz)"
        )

    # -- public API ------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("LocalAPIServer is not running")
        return f"https://{LOOPBACK}:{self._port}"

    @property
    def kubeconfig_path(self) -> Path:
        """The admin kubeconfig (client certificate in ``system:masters``)."""
        return self.workdir / "admin.kubeconfig"

    @property
    def ca_cert(self) -> Path:
        assert self._pki is not None
        return self._pki.ca_cert

    def api_client(self) -> ApiClient:
        """A new admin ``ApiClient``; the caller closes it."""
        return client_from_kubeconfig(self.kubeconfig_path)

    @property
    def admin(self) -> ApiClient:
        """The server's own admin client (closed by ``stop()``)."""
        if self._admin is None:
            raise RuntimeError("LocalAPIServer is not running")
        return self._admin

    @property
    def mapper(self) -> rest.ResourceMapper:
        if self._mapper is None:
            raise RuntimeError("LocalAPIServer is not running")
        return self._mapper

    def apply_manifests(
        self,
        paths_or_docs: Iterable[rest.Manifest],
        *,
        namespace: str | None = None,
        dry_run: bool = False,
    ) -> list[dict[str, Any]]:
        """Server-side apply every document (as admin); returns the server's answers in order."""
        return [
            rest.apply_document(self.admin, document, mapper=self.mapper, namespace=namespace, dry_run=dry_run)
            for document in rest.load_documents(paths_or_docs)
        ]

    def create_namespace(self, name: str) -> None:
        """Create (or keep) a namespace."""
        self.apply_manifests([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}])

    def delete_namespace(self, name: str) -> None:
        """Delete a namespace (it stays Terminating: no namespace controller runs)."""
        with contextlib.suppress(ApiException):
            rest.request_json(self.admin, "DELETE", f"/api/v1/namespaces/{name}")

    def serviceaccount_token(self, namespace: str, name: str, *, expiration_seconds: int = 3600) -> str:
        """Mint a token for an existing ServiceAccount through the TokenRequest API."""
        answer = rest.request_json(
            self.admin,
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            body={
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": expiration_seconds},
            },
        )
        token: str = answer["status"]["token"]
        return token

    def serviceaccount_kubeconfig(self, namespace: str, name: str, *, expiration_seconds: int = 3600) -> Path:
        """A kubeconfig acting as ``system:serviceaccount:<namespace>:<name>`` with a TokenRequest-minted token."""
        token = self.serviceaccount_token(namespace, name, expiration_seconds=expiration_seconds)
        self._token_files += 1
        return kubeconfig.write_token_kubeconfig(
            self.workdir / f"sa-{namespace}-{name}-{self._token_files}.kubeconfig",
            server=self.url,
            ca_cert=self.ca_cert,
            user_name=f"system:serviceaccount:{namespace}:{name}",
            token=token,
        )

    def install_crds(self, paths: Iterable[Path]) -> list[dict[str, Any]]:
        """Apply CRDs server-side, then wait until each is Established and its kinds are discoverable."""
        answers = self.apply_manifests(list(paths))
        pending = [crd["metadata"]["name"] for crd in answers]

        def established() -> bool:
            while pending:
                path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{pending[0]}"
                if not _established(rest.request_json(self.admin, "GET", path)):
                    raise LookupError(f"CRD {pending[0]} is not Established yet")
                pending.pop(0)
            return True

        waiting.wait_until(established, timeout=CRD_TIMEOUT_SECONDS, interval=POLL_INTERVAL_SECONDS,
                           what="the CRDs Established", retry_on=(LookupError,))
        self._wait_served(template.CrdRef.from_crd(crd) for crd in answers)
        return answers


def client_from_kubeconfig(path: Path) -> ApiClient:
    """A new ``ApiClient`` for a kubeconfig file (e.g. one from ``serviceaccount_kubeconfig``); the caller closes it."""
    client: ApiClient = cast(Any, kube_config).new_client_from_config(config_file=str(path))
    return client


def _log(process: ChildProcess) -> str:
    return log_tail(process.log_path, lines=200)


def _established(crd: dict[str, Any]) -> bool:
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def _etcd_healthy(client_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{client_url}/health", timeout=1.0) as response:
            return b'"health":"true"' in response.read()
    except (OSError, urllib.error.URLError):
        return False


def _https_ok(url: str, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0, context=context) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False
