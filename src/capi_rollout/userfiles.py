"""The one reader of user-supplied files and YAML/JSON text: bounded, strict, with one-line errors.

Contract: every YAML or JSON the product reads from a user (a snapshot, a ledger file, a kubeconfig, GitOps
manifests, a talosconfig, a Talos node's status) goes through here.

* :func:`read_text` reads a file (``-`` = stdin) and raises :class:`InputError` — one line naming the file and
  the problem — when it is missing, a directory, unreadable, larger than :data:`MAX_FILE_BYTES`, binary (a NUL
  byte) or not UTF-8.
* :func:`load_yaml_all` / :func:`load_yaml` parse YAML with PyYAML's safe loader under limits: at most
  :data:`MAX_ALIASES` aliases per document, at most :data:`MAX_EXPANDED_NODES` nodes once every alias is
  expanded (a 739-byte "billion laughs" document expands to more than a billion), no recursive alias, at most
  :data:`MAX_TEXT_CHARS` characters. Timestamps stay strings, as in the Kubernetes API's JSON. Every problem
  (bad syntax, a limit, an integer of 5000 digits, nesting too deep for the parser) is a
  :class:`yaml.YAMLError`, so callers catch one type.
* :func:`load_json` parses JSON with the same size and depth bounds; every problem is a :class:`ValueError`.
* :func:`yaml_documents` / :func:`json_document` do the same and raise :class:`InputError` naming ``source``.
* :func:`manifest_objects` is the one reader of multi-document manifests (snapshots, GitOps trees, the
  overlay, test fixtures): every object with where it sits (``document 2 item 3``), empty documents dropped, a
  ``v1 List`` (any ``kind`` ending in ``List`` with ``items``) flattened, anything that is not a mapping an
  :class:`InputError` naming ``source``. Shape checks stay with the callers (:func:`object_problem`).
* :func:`object_problem` says why a parsed document is not a Kubernetes object of the shape the rollout
  rules read (so a snapshot or a manifest of the wrong shape is a one-line error, not a traceback).

No network, no writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, SequenceNode

MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_TEXT_CHARS = MAX_FILE_BYTES
MAX_ALIASES = 1000
MAX_EXPANDED_NODES = 1_000_000


class InputError(Exception):
    """A user-supplied input cannot be used; the message is one line naming the input and the problem.

    ``exit_code`` is what the CLI exits with: 2 (bad input) unless a subclass says otherwise."""

    exit_code = 2


class YAMLLimitError(yaml.YAMLError):
    """The YAML is well formed but exceeds a limit of :mod:`capi_rollout.userfiles` (or cannot be built)."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def read_text(path: str, *, what: str = "file") -> str:
    """The text of ``path`` (``-`` = stdin), or :class:`InputError` naming the file and why it is unusable."""
    if path == "-":
        data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
        source = f"{what} on stdin"
    else:
        source = f"{what} {path}"
        p = Path(path)
        try:
            if p.is_dir():
                raise InputError(f"{source}: is a directory, not a file")
            with p.open("rb") as fh:
                data = fh.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            raise InputError(f"{source}: no such file") from None
        except IsADirectoryError:
            raise InputError(f"{source}: is a directory, not a file") from None
        except OSError as exc:
            raise InputError(f"{source}: cannot read: {exc.strerror or exc}") from None
    return decode(data, source)


def decode(data: bytes, source: str) -> str:
    """UTF-8 text from ``data``; :class:`InputError` when too large, binary or not UTF-8."""
    if len(data) > MAX_FILE_BYTES:
        raise InputError(f"{source}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise InputError(f"{source}: binary data (a NUL byte at offset {nul}), not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{source}: not UTF-8 text (invalid byte at offset {exc.start})") from None


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with alias and expansion limits checked on every composed document."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise YAMLLimitError(f"more than {MAX_ALIASES} YAML aliases in one document")
        node: Node | None = Composer.compose_node(self, parent, index)
        return node

    def compose_document(self) -> Node | None:
        self._aliases = 0
        node: Node | None = Composer.compose_document(self)
        if node is not None:
            _check_expansion(node)
        return node


# Timestamps stay strings (the Kubernetes API's JSON has no timestamp type; a datetime is not JSON).
_BoundedLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _check_expansion(root: Node) -> None:
    """Refuse a recursive alias or a document whose alias expansion exceeds :data:`MAX_EXPANDED_NODES`."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    # Iterative post-order walk: each distinct node is sized once (memoized), so a bomb costs linear time.
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children: list[Node] = []
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
        if done:
            on_path.discard(key)
            size = 1 + sum(sizes[id(c)] for c in children)
            if size > MAX_EXPANDED_NODES:
                raise YAMLLimitError(
                    f"YAML aliases expand to more than {MAX_EXPANDED_NODES} nodes (an alias bomb?)")
            sizes[key] = size
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise YAMLLimitError("a YAML alias refers to a node that contains it (recursive alias)")
        on_path.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in on_path:
                raise YAMLLimitError("a YAML alias refers to a node that contains it (recursive alias)")
            if id(child) not in sizes:
                stack.append((child, False))


def load_yaml_all(text: str) -> list[Any]:
    """Every document of ``text`` (safe, bounded); :class:`yaml.YAMLError` on any problem."""
    if len(text) > MAX_TEXT_CHARS:
        raise YAMLLimitError(f"larger than {MAX_TEXT_CHARS} characters")
    loader = _BoundedLoader(text)
    try:
        docs: list[Any] = []
        while loader.check_data():  # type: ignore[no-untyped-call]
            docs.append(loader.get_data())
        return docs
    except yaml.YAMLError:
        raise
    except RecursionError:
        raise YAMLLimitError("nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. an integer of 5000 digits, a bad !!timestamp
        raise YAMLLimitError(f"a value cannot be read: {_one_line(str(exc))}") from None
    finally:
        loader.dispose()


def load_yaml(text: str) -> Any:
    """The single document of ``text`` (None when empty); :class:`yaml.YAMLError` on any problem or a second one."""
    docs = load_yaml_all(text)
    if len(docs) > 1:
        raise YAMLLimitError(f"expected one YAML document, found {len(docs)}")
    return docs[0] if docs else None


def load_json(text: str) -> Any:
    """The JSON value of ``text``; :class:`ValueError` (with a one-line reason) on any problem."""
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"larger than {MAX_TEXT_CHARS} characters")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ValueError("not usable JSON: nested too deeply") from None
    except ValueError as exc:  # an integer of 5000 digits
        raise ValueError(f"not usable JSON: {_one_line(str(exc))}") from None


def yaml_documents(text: str, source: str) -> list[Any]:
    """:func:`load_yaml_all` with :class:`InputError` naming ``source``."""
    try:
        return load_yaml_all(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{source}: not valid YAML: {yaml_problem(exc)}") from exc


def manifest_objects(text: str, source: str) -> list[tuple[str, dict[str, Any]]]:
    """Every object of the multi-document YAML/JSON ``text`` as ``(where, object)``; :class:`InputError` naming
    ``source`` for bad YAML, a document or List item that is not a mapping, or a List without an items list."""
    found: list[tuple[str, dict[str, Any]]] = []
    for i, doc in enumerate(yaml_documents(text, source), start=1):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise InputError(f"{source}: document {i} is {_kind_name(doc)}, not a Kubernetes object (not a mapping)")
        kind = doc.get("kind")
        if isinstance(kind, str) and kind.endswith("List") and ("items" in doc or kind == "List"):
            items = doc.get("items")
            if not isinstance(items, list):
                raise InputError(f"{source}: document {i} is a {kind[:60]} without an items list")
            for j, item in enumerate(items, start=1):
                if not isinstance(item, dict):
                    raise InputError(f"{source}: document {i} item {j} is {_kind_name(item)}, "
                                     "not a Kubernetes object (not a mapping)")
                found.append((f"document {i} item {j}", item))
        else:
            found.append((f"document {i}", doc))
    return found


def json_document(text: str, source: str) -> Any:
    """:func:`load_json` with :class:`InputError` naming ``source``."""
    try:
        return load_json(text)
    except ValueError as exc:
        raise InputError(f"{source}: {exc}") from exc


def yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: the problem and where (``line 3 column 7: found undefined alias 'a'``)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
        return where + _one_line(" ".join(p for p in (exc.context, exc.problem) if p) or str(exc))
    return _one_line(str(exc))


# Nested fields the rollout rules read as mappings (TalosControlPlane and MachineDeployment, both CAPI shapes).
_MAPPINGS: tuple[tuple[str, ...], ...] = (
    ("spec",), ("status",), ("spec", "rolloutStrategy"), ("spec", "rolloutStrategy", "rollingUpdate"),
    ("spec", "strategy"), ("spec", "strategy", "rollingUpdate"), ("spec", "rollout"),
    ("spec", "rollout", "strategy"), ("spec", "rollout", "strategy", "rollingUpdate"), ("spec", "controlPlaneRef"),
    ("status", "v1beta2"),
)
_INTEGERS: tuple[tuple[str, ...], ...] = (
    ("spec", "replicas"), ("metadata", "generation"), ("status", "observedGeneration"), ("status", "replicas"),
    ("status", "readyReplicas"), ("status", "updatedReplicas"), ("status", "availableReplicas"),
    ("status", "upToDateReplicas"),
)


def _kind_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "empty"}.get(type(value), type(value).__name__)


def object_problem(doc: Any) -> str | None:
    """Why ``doc`` is not a Kubernetes object of the shape the rollout reads, or None: ``apiVersion``, ``kind``
    and ``metadata.name`` strings, labels and annotations string maps, ``spec``/``status`` and the strategy
    fields mappings, counters integers, conditions and ownerReferences lists of mappings."""
    if not isinstance(doc, dict):
        return f"is {_kind_name(doc)}, not a Kubernetes object (a mapping)"
    for key in ("apiVersion", "kind"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            return f"has no {key} string (got {_kind_name(doc.get(key))})"
    kind = doc["kind"][:60]
    md = doc.get("metadata")
    if not isinstance(md, dict):
        return f"{kind}: metadata must be a mapping, got {_kind_name(md)}"
    if not isinstance(md.get("name"), str) or not md["name"]:
        return f"{kind}: metadata.name must be a non-empty string, got {_kind_name(md.get('name'))}"
    who = f"{kind} {md['name'][:253]}"
    if "namespace" in md and not isinstance(md["namespace"], str):
        return f"{who}: metadata.namespace must be a string, got {_kind_name(md['namespace'])}"
    for key in ("labels", "annotations"):
        value = md.get(key)
        if value is not None and (not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items())):
            return f"{who}: metadata.{key} must map strings to strings"
    lists: tuple[tuple[str, ...], ...] = (("metadata", "ownerReferences"), ("status", "conditions"),
                                          ("status", "v1beta2", "conditions"))
    for path in lists:
        value = _at(doc, path)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, dict) for v in value)):
            return f"{who}: {'.'.join(path)} must be a list of mappings, got {_kind_name(value)}"
    for path in _MAPPINGS:
        value = _at(doc, path)
        if value is not None and not isinstance(value, dict):
            return f"{who}: {'.'.join(path)} must be a mapping, got {_kind_name(value)}"
    for path in _INTEGERS:
        value = _at(doc, path)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            return f"{who}: {'.'.join(path)} must be a whole number ≥ 0, got {_kind_name(value)}"
    return None


def _at(doc: dict[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = doc
    for key in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(key)
    return cur
