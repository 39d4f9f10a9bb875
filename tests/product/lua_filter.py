"""Run an Argo Events dependency filter ``script`` the way Argo Events v1.9.11 does, on real Lua 5.1 (lupa).

Contract: :func:`script_fires` takes the script text exactly as the Sensor ships it and the event data (a dict,
JSON-marshalled and re-read first, as ``filterScript`` does), and returns whether the filter passes.

Semantics copied from argo-events v1.9.11 ``pkg/sensors/dependencies/filter.go`` (``filterScript``) and
``transform.go`` (``mapToTable``): a fresh state per event (gopher-lua implements Lua 5.1, hence ``lupa.lua51``);
the event data becomes the global table ``event``: numbers, strings, booleans and objects map over, arrays become
1-based sequences of their number/string/bool/object items (JSON ``null`` and nested arrays are dropped, as
``mapToTable`` has no case for them), a ``null`` field is absent; the chunk runs with ``DoString`` and the
filter passes only when the value it leaves on top of the stack is exactly ``true``. A script error is an
error (the event is not dispatched), raised here as :class:`LuaScriptError`.
"""

from __future__ import annotations

import json
from typing import Any

import lupa.lua51 as lua51


class LuaScriptError(RuntimeError):
    """The script failed to compile or raised: Argo Events logs it and drops the event."""


def _table(runtime: Any, value: dict[str, Any]) -> Any:
    table = runtime.table()
    for key, item in value.items():
        converted = _value(runtime, item)
        if converted is not None:
            table[key] = converted
    return table


def _value(runtime: Any, item: Any) -> Any:
    if isinstance(item, bool | int | float | str):
        return float(item) if isinstance(item, int) and not isinstance(item, bool) else item
    if isinstance(item, dict):
        return _table(runtime, item)
    if isinstance(item, list):
        seq = runtime.table()
        n = 0
        for element in item:
            if isinstance(element, dict | bool | int | float | str):  # []interface{}: maps, numbers, strings, bools
                n += 1
                seq[n] = _value(runtime, element)
        return seq
    return None  # JSON null: mapToTable's default case sets nothing


def script_fires(script: str, event: dict[str, Any]) -> bool:
    """Whether the filter ``script`` passes ``event`` (the EventSource's event data)."""
    data = json.loads(json.dumps(event))
    runtime = lua51.LuaRuntime(unpack_returned_tuples=False, register_eval=False, register_builtins=False)
    runtime.globals()["event"] = _table(runtime, data)
    try:
        result = runtime.execute(script)
    except lua51.LuaError as exc:
        raise LuaScriptError(str(exc)) from exc
    return result is True
