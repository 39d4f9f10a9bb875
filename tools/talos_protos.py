"""Generate the simulator's Talos API protobuf modules from the upstream sources in pinned Go module zips.

Contract (run by ``make setup`` with the venv's Python; nothing it writes is committed):

* Talos: ``api/{machine,common,resource/definitions/{enums,runtime}}`` ``.proto`` files of
  ``github.com/siderolabs/talos@$TALOS_API_VERSION`` (tools/versions.env), read from the Go module zip
  (``go mod download``, checked against the Go checksum database like every module).
* Two imports that the Talos zip does not carry as ``.proto`` text are read from the descriptors that upstream's
  generated Go code embeds (``file_<name>_rawDesc``), in the module versions the pinned talosctl v1.13 line is
  built with (tools/talosctl/v1.13/go.mod; the proxy refuses the COSI runtime release Talos v1.14.0 requires):
  ``v1alpha1/{resource,state,meta}.proto`` (COSI, ``github.com/cosi-project/runtime/api/v1alpha1``) and
  ``google/rpc/status.proto`` (``google.golang.org/genproto/googleapis/rpc/status``).
* ``grpc_tools.protoc`` (the dev lock's grpcio-tools) compiles them to ``*_pb2.py`` + ``*_pb2.pyi`` under
  ``sim/talos/upstream/`` (gitignored, shipped in the wheel as a hatch artifact), imports rewritten to that
  package. The well-known ``google.protobuf`` types come from the protobuf runtime as usual.
* Idempotent: a stamp (pin + this script's hash) makes a second run a no-op; a failed run leaves the old tree.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "sim" / "talos" / "upstream"
PACKAGE = "sim.talos.upstream"
TALOS_MODULE = "github.com/siderolabs/talos"
COSI_MODULE = "github.com/cosi-project/runtime"
RPC_MODULE = "google.golang.org/genproto/googleapis/rpc"
TALOS_PROTOS = [
    "common/common.proto",
    "machine/machine.proto",
    "resource/definitions/enums/enums.proto",
    "resource/definitions/runtime/runtime.proto",
]
# (module, Go file inside it, proto file name it embeds)
EMBEDDED = [
    (COSI_MODULE, "api/v1alpha1/resource.pb.go", "v1alpha1/resource.proto"),
    (COSI_MODULE, "api/v1alpha1/state.pb.go", "v1alpha1/state.proto"),
    (COSI_MODULE, "api/v1alpha1/meta.pb.go", "v1alpha1/meta.proto"),
    (RPC_MODULE, "status/status.pb.go", "google/rpc/status.proto"),
]


def log(message: str) -> None:
    print(f"[talos-protos] {message}", file=sys.stderr)


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "tools" / "versions.env").read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key] = value
    return out


def go_env() -> dict[str, str]:
    cache = Path(os.environ.get("CAPI_ROLLOUT_CACHE", Path.home() / ".cache" / "capi-rollout"))
    return {**os.environ, "GOMODCACHE": str(cache / "go" / "mod"), "GOFLAGS": "-mod=readonly",
            "GOTOOLCHAIN": "local"}


def download(module: str, version: str) -> Path:
    """The extracted module directory (``go mod download``: proxy + checksum database)."""
    if shutil.which("go") is None:
        raise SystemExit("[talos-protos] needs the Go toolchain (`go`) to read the pinned Talos module zip")
    done = subprocess.run(["go", "mod", "download", "-json", f"{module}@{version}"], env=go_env(),
                          capture_output=True, text=True, cwd=tempfile.gettempdir())
    info = json.loads(done.stdout or "{}")
    if done.returncode != 0 or "Dir" not in info:
        raise SystemExit(f"[talos-protos] go mod download {module}@{version}: {info.get('Error') or done.stderr}")
    return Path(info["Dir"])


def required_version(go_mod: Path, module: str) -> str:
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)} (v\S+)", go_mod.read_text(), re.MULTILINE)
    if match is None:
        raise SystemExit(f"[talos-protos] {go_mod} does not require {module}")
    return match.group(1)


def embedded_descriptor(go_file: Path, proto_name: str) -> descriptor_pb2.FileDescriptorProto:
    """The FileDescriptorProto that protoc-gen-go embedded in ``go_file`` as ``file_<name>_rawDesc``."""
    text = go_file.read_text()
    as_bytes = re.search(r"^var file_\w+_rawDesc = \[\]byte\{\n(.*?)^\}", text, re.MULTILINE | re.DOTALL)
    as_string = re.search(r"^const file_\w+_rawDesc = \"\" \+\n((?:\t\".*\"(?: \+)?\n)+)", text, re.MULTILINE)
    if as_bytes is not None:  # older protoc-gen-go: a byte slice literal
        raw = bytes(int(b, 16) for b in re.findall(r"0x([0-9a-f]{2})", as_bytes.group(1)))
    elif as_string is not None:  # newer: a string constant (Go and Python share its escapes: \xNN, \n, \")
        raw = b"".join(codecs.escape_decode(part.encode())[0]
                       for part in re.findall(r"^\t\"(.*)\"(?: \+)?$", as_string.group(1), re.MULTILINE))
    else:
        raise SystemExit(f"[talos-protos] no rawDesc in {go_file}")
    descriptor = descriptor_pb2.FileDescriptorProto.FromString(raw)
    if descriptor.name != proto_name:
        raise SystemExit(f"[talos-protos] {go_file} embeds {descriptor.name!r}, expected {proto_name!r}")
    return descriptor


def rewrite_imports(source: str, modules: set[str]) -> str:
    """``from common import common_pb2`` → ``from sim.talos.upstream.common import common_pb2`` (generated only)."""
    def repl(match: re.Match[str]) -> str:
        package, name = match.group(1), match.group(2)
        if f"{package}.{name}" in modules:
            return f"from {PACKAGE}.{package} import {name}"
        return match.group(0)
    return re.sub(r"^from ([\w.]+) import (\w+_pb2)\b", repl, source, flags=re.MULTILINE)


def generate(version: str) -> None:
    import grpc_tools
    from grpc_tools import protoc

    talos = download(TALOS_MODULE, version)
    go_mod = ROOT / "tools" / "talosctl" / "v1.13" / "go.mod"
    deps = {module: download(module, required_version(go_mod, module)) for module in (COSI_MODULE, RPC_MODULE)}
    with tempfile.TemporaryDirectory(prefix="talos-protos-") as tmp:
        work = Path(tmp)
        descriptor_set = descriptor_pb2.FileDescriptorSet()
        for module, go_file, proto_name in EMBEDDED:
            descriptor_set.file.append(embedded_descriptor(deps[module] / go_file, proto_name))
        (work / "embedded.pb").write_bytes(descriptor_set.SerializeToString())
        staging = work / "out"
        staging.mkdir()
        include = Path(grpc_tools.__file__).parent / "_proto"
        argv = ["protoc", f"-I{talos / 'api'}", f"-I{include}", f"--descriptor_set_in={work / 'embedded.pb'}",
                f"--python_out={staging}", f"--pyi_out={staging}", *TALOS_PROTOS,
                *(name for _, _, name in EMBEDDED)]
        if protoc.main(argv) != 0:
            raise SystemExit(f"[talos-protos] protoc failed: {' '.join(argv)}")
        modules = {str(p.relative_to(staging).with_suffix("")).replace("/", ".")
                   for p in staging.rglob("*_pb2.py")}
        for path in staging.rglob("*_pb2.py*"):
            path.write_text(rewrite_imports(path.read_text(), modules))
        for directory in [staging, *(p for p in staging.rglob("*") if p.is_dir())]:
            (directory / "__init__.py").touch()
        (staging / "__init__.py").write_text(
            f'"""Generated by tools/talos_protos.py from {TALOS_MODULE}@{version} api/*.proto (and the COSI and\n'
            'google.rpc descriptors of tools/talosctl/v1.13/go.mod). Not committed; `make setup` regenerates it."""\n\n'
            f'TALOS_API_VERSION = "{version}"\n')
        new = OUT.with_name(OUT.name + ".new")
        shutil.rmtree(new, ignore_errors=True)
        shutil.copytree(staging, new)
        shutil.rmtree(OUT, ignore_errors=True)
        new.rename(OUT)


def main() -> int:
    version = pins()["TALOS_API_VERSION"]
    stamp_value = f"{version} {hashlib.sha256(Path(__file__).read_bytes()).hexdigest()}"
    stamp = OUT / ".stamp"
    if stamp.is_file() and stamp.read_text() == stamp_value:
        return 0
    log(f"generating {PACKAGE} from {TALOS_MODULE}@{version}")
    generate(version)
    stamp.write_text(stamp_value)
    log(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
