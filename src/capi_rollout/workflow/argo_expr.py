"""A strict subset of expr-lang (github.com/expr-lang/expr), enough to decide an Argo ``retryStrategy.expression``.

Contract: pure. :func:`evaluate` compiles and runs one expression over string variables the way Argo v4.0.2
does in ``processNodeRetries`` (workflow/controller/operator.go: ``buildRetryStrategyLocalScope`` then
``argoexpr.EvalBool``): the variables are ``retries``, ``lastRetry.exitCode`` (``"-1"`` when the pod never
reported one, e.g. a force-deleted pod), ``lastRetry.status`` (``Failed`` or ``Error``), ``lastRetry.duration``
and ``lastRetry.message`` — all strings. Like ``expr.Compile`` with an environment, an unknown name, a type
mismatch or a non-bool result is an error (:class:`ExprError`), raised before anything is evaluated.

The subset: string literals (``"..."``/``'...'``), lists of literals, the variables above, parentheses, ``!``/
``not``, ``&&``/``and``, ``||``/``or`` (short-circuit), ``==``/``!=``, ``in``/``not in`` (a list), ``contains``,
``startsWith``, ``endsWith``. Anything else (functions, numbers, ``matches``, ...) is refused with
:class:`ExprError`, never evaluated differently from expr-lang. Precedence as in expr-lang's parser:
``or`` < ``and`` < comparison/``in``/``contains`` < unary ``not``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Union

RETRY_VARIABLES = ("retries", "lastRetry.exitCode", "lastRetry.status", "lastRetry.duration", "lastRetry.message")


class ExprError(ValueError):
    """The expression does not compile (or would not, in expr-lang) within the supported subset."""


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>\|\||&&|==|!=|!|\(|\)|\[|\]|,)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
      | (?P<bad>\S)
    )""",
    re.VERBOSE,
)
_WORD_OPS = {"and": "&&", "or": "||", "not": "!", "in": "in", "contains": "contains", "startsWith": "startsWith",
             "endsWith": "endsWith"}
_STRING_OPS = ("contains", "startsWith", "endsWith")


@dataclass(frozen=True)
class _Lit:
    value: str | bool | tuple[str, ...]


@dataclass(frozen=True)
class _Var:
    name: str


@dataclass(frozen=True)
class _Not:
    operand: _Node


@dataclass(frozen=True)
class _Bin:
    op: str
    left: _Node
    right: _Node


_Node = Union[_Lit, _Var, _Not, _Bin]  # noqa: UP007 (a runtime alias of dataclasses defined above)


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            break
        pos = m.end()
        if m.group("bad"):
            raise ExprError(f"unsupported character {m.group('bad')!r} at {m.start('bad')}")
        if m.group("str"):
            out.append(("str", _unquote(m.group("str"))))
        elif m.group("op"):
            out.append(("op", m.group("op")))
        else:
            name = m.group("name")
            if name in ("true", "false"):
                out.append(("bool", name))
            elif name in _WORD_OPS:
                out.append(("op", _WORD_OPS[name]))
            else:
                out.append(("name", name))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok != ("op", value)):
            raise ExprError(f"expected {value or 'a value'}, found {tok[1] if tok else 'the end'}")
        self.i += 1
        return tok

    def parse(self) -> _Node:
        node = self.or_()
        if self.peek() is not None:
            raise ExprError(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return node

    def or_(self) -> _Node:
        node = self.and_()
        while self.peek() == ("op", "||"):
            self.take()
            node = _Bin("||", node, self.and_())
        return node

    def and_(self) -> _Node:
        node = self.cmp()
        while self.peek() == ("op", "&&"):
            self.take()
            node = _Bin("&&", node, self.cmp())
        return node

    def cmp(self) -> _Node:
        node = self.unary()
        tok = self.peek()
        if tok == ("op", "!") and self.i + 1 < len(self.toks) and self.toks[self.i + 1] == ("op", "in"):
            self.i += 2
            return _Not(_Bin("in", node, self.unary()))
        if tok is not None and tok[0] == "op" and tok[1] in ("==", "!=", "in", *_STRING_OPS):
            self.take()
            node = _Bin(tok[1], node, self.unary())
            nxt = self.peek()
            if nxt is not None and nxt[0] == "op" and nxt[1] in ("==", "!=", "in", *_STRING_OPS):
                raise ExprError(f"chained comparison at {nxt[1]!r}: add parentheses")
        return node

    def unary(self) -> _Node:
        if self.peek() == ("op", "!"):
            self.take()
            return _Not(self.unary())
        return self.primary()

    def primary(self) -> _Node:
        kind, value = self.take()
        if kind == "str":
            return _Lit(value)
        if kind == "bool":
            return _Lit(value == "true")
        if kind == "name":
            if self.peek() == ("op", "("):
                raise ExprError(f"function {value}() is not supported")
            return _Var(value)
        if value == "(":
            node = self.or_()
            self.take(")")
            return node
        if value == "[":
            items: list[str] = []
            while self.peek() != ("op", "]"):
                k, v = self.take()
                if k != "str":
                    raise ExprError("only lists of string literals are supported")
                items.append(v)
                if self.peek() == ("op", ","):
                    self.take()
            self.take("]")
            return _Lit(tuple(items))
        raise ExprError(f"unexpected {value!r}")


def _type(node: _Node, names: Mapping[str, str]) -> str:
    if isinstance(node, _Lit):
        return {str: "string", bool: "bool", tuple: "list"}[type(node.value)]
    if isinstance(node, _Var):
        if node.name not in names:
            raise ExprError(f"unknown name {node.name}")
        return "string"
    if isinstance(node, _Not):
        if _type(node.operand, names) != "bool":
            raise ExprError("invalid operation: ! on a non-bool")
        return "bool"
    left, right = _type(node.left, names), _type(node.right, names)
    if node.op in ("&&", "||") and (left, right) != ("bool", "bool"):
        raise ExprError(f"invalid operation: {left} {node.op} {right}")
    if node.op in ("==", "!=") and left != right:
        raise ExprError(f"invalid operation: {left} {node.op} {right} (mismatched types)")
    if node.op == "in" and (left, right) != ("string", "list"):
        raise ExprError(f"invalid operation: {left} in {right}")
    if node.op in _STRING_OPS and (left, right) != ("string", "string"):
        raise ExprError(f"invalid operation: {left} {node.op} {right}")
    return "bool"


def _eval(node: _Node, names: Mapping[str, str]) -> str | bool | tuple[str, ...]:
    if isinstance(node, _Lit):
        return node.value
    if isinstance(node, _Var):
        return names[node.name]
    if isinstance(node, _Not):
        return not _eval(node.operand, names)
    left = _eval(node.left, names)
    if node.op == "&&":
        return bool(left) and bool(_eval(node.right, names))
    if node.op == "||":
        return bool(left) or bool(_eval(node.right, names))
    right = _eval(node.right, names)
    if node.op == "==":
        return left == right
    if node.op == "!=":
        return left != right
    if node.op == "in":
        return left in right  # type: ignore[operator]
    assert isinstance(left, str) and isinstance(right, str)
    return {"contains": right in left, "startsWith": left.startswith(right), "endsWith": left.endswith(right)}[node.op]


def compile_check(expression: str, names: tuple[str, ...] = RETRY_VARIABLES) -> None:
    """Raise :class:`ExprError` unless ``expression`` compiles to a bool over ``names`` (all strings)."""
    if _type(_Parser(expression).parse(), dict.fromkeys(names, "string")) != "bool":
        raise ExprError("the expression does not evaluate to a bool")


def evaluate(expression: str, variables: Mapping[str, str]) -> bool:
    """``expression`` over string ``variables``; :class:`ExprError` when it does not compile (nothing runs)."""
    tree = _Parser(expression).parse()
    if _type(tree, variables) != "bool":
        raise ExprError("the expression does not evaluate to a bool")
    return bool(_eval(tree, variables))
