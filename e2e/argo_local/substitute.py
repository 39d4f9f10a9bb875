"""``{{...}}`` substitution exactly as Argo's simple templates do it, strictly.

Contract: pure functions, no I/O. Argo replaces tags in the JSON text of a template with the value escaped
for JSON (``strconv.Quote`` without the outer quotes), then decodes it again, so the net effect on every
string leaf is the raw value spliced in; that is what :func:`substitute` does to every string in a nested
structure (mapping keys are left alone, like Argo's field names). Tags are trimmed of whitespace; a tag is what
the product's one reference pattern (:data:`capi_rollout.workflow.semantic.ARGO_REF`) matches.

Strictness: a tag with no value in ``scope`` raises :class:`UnresolvedReference` naming the field path, and
an expression tag (``{{=...}}``) raises :class:`ExpressionRefused`; Argo would evaluate the expression, this
executor does not implement ``expr`` and so refuses rather than guessing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from capi_rollout.workflow.semantic import ARGO_REF


class UnresolvedReference(ValueError):
    """A ``{{tag}}`` has no value in its scope (Argo: ``failed to resolve {{tag}}``)."""

    def __init__(self, tag: str, where: str) -> None:
        self.tag = tag
        self.where = where
        super().__init__(f"{where}: failed to resolve {{{{{tag}}}}}")


class ExpressionRefused(ValueError):
    """An expression tag ``{{=...}}``: not implemented by the local executor, so refused."""

    def __init__(self, tag: str, where: str) -> None:
        self.tag = tag
        self.where = where
        super().__init__(f"{where}: expression tag {{{{{tag}}}}} is not implemented by the local executor")


def tags(text: str) -> Iterator[str]:
    """The trimmed tags of a string, in order."""
    for m in ARGO_REF.finditer(text):
        yield m.group(1).strip()


def substitute_text(text: str, scope: Mapping[str, str], where: str) -> str:
    def repl(m: re.Match[str]) -> str:
        tag = m.group(1).strip()
        if tag.startswith("="):
            raise ExpressionRefused(tag, where)
        if tag not in scope:
            raise UnresolvedReference(tag, where)
        return scope[tag]

    return ARGO_REF.sub(repl, text)


def substitute(value: Any, scope: Mapping[str, str], where: str) -> Any:
    """A deep copy of ``value`` with every tag in every string leaf replaced; ``where`` names the root path."""
    if isinstance(value, str):
        return substitute_text(value, scope, where)
    if isinstance(value, Mapping):
        return {k: substitute(v, scope, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, scope, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def all_tags(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """Every ``(tag, field path)`` in a nested structure (for static validation)."""
    if isinstance(value, str):
        for t in tags(value):
            yield t, where
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from all_tags(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from all_tags(v, f"{where}[{i}]")


def go_quote(text: str) -> str:
    """Go's ``strconv.Quote`` for the characters JSON produces (used for ``workflow.failures``)."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)
