"""The API's JSON filters, read into the ``qa`` filter tree (``qvd.admin.filters``).

A filter is an object, or an array of alternating keys and values (so a key
may repeat); all its conditions must hold::

    {"name": "x"}                        name = 'x'
    {"id": [1, 2, 3]}                    id is one of them
    {"state": {"!=": "running"}}         one operator: = != <> < > <= >= ~ LIKE -between
    {"id": {"-between": [10, 20]}}       10 <= id <= 20 (qa4's [a:b]; QVD 4 refused it)
    {"-or": ["id", 1, "id", 2]}          -and, -or, -not over an object or an array

The tree is the one ``qa`` parses from its text syntax, so the SQL comes
from the same ``to_sql`` and means the same thing.  Two places where QVD 4
differs (documented in protocols/api.md): ``{"k": {"!=": [a, b]}}`` means
"none of a, b" (QVD 4 OR-ed the inequalities, which holds almost always),
and a condition on an empty (NULL) column is false, also under ``-not``.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

from qvd.admin.filters import MAX_DEPTH, And, Compare, Node, Not, Or, ValueList, ValueRange
from qvd.api.errors import APIError

LOGICAL = ("-and", "-or", "-not")
OPERATORS = {"=": "=", "!=": "!=", "<>": "!=", "<": "<", ">": ">", "<=": "<=", ">=": ">=",
             "~": "~", "LIKE": "~", "like": "~", "-like": "~", "-between": "between"}


def parse_filter(filters: Any) -> Optional[Node]:
    """The tree of a JSON filter (None when empty); APIError 6320 when malformed."""
    return _all(_pairs(filters, 0), 0)


def keys(node: Optional[Node]) -> Iterator[str]:
    """Every key a filter tree compares, in order (without recursion)."""
    stack = [node] if node is not None else []
    while stack:
        current = stack.pop()
        if isinstance(current, Compare):
            yield current.key
        elif isinstance(current, (And, Or)):
            stack += [current.right, current.left]
        elif isinstance(current, Not):
            stack.append(current.operand)


def values_of(node: Optional[Node], key: str) -> list[str]:
    """The values compared with ``=`` to ``key`` (for filters that must name one object)."""
    found: list[str] = []
    stack = [node] if node is not None else []
    while stack:
        current = stack.pop()
        if isinstance(current, Compare) and current.key == key:
            if isinstance(current.value, str):
                found.append(current.value)
            elif isinstance(current.value, ValueList):
                found += current.value.items
            else:
                found += [current.value.low, current.value.high]
        elif isinstance(current, (And, Or)):
            stack += [current.right, current.left]
        elif isinstance(current, Not):
            stack.append(current.operand)
    return found


def _pairs(filters: Any, depth: int) -> list[tuple[str, Any]]:
    if depth > MAX_DEPTH:
        raise APIError(6320, info=f"filters nest more than {MAX_DEPTH} deep")
    if filters is None or filters == "":
        return []
    if isinstance(filters, dict):
        return list(filters.items())
    if isinstance(filters, list):
        if len(filters) % 2:
            raise APIError(6320, info="a filter array alternates keys and values")
        pairs = list(zip(filters[::2], filters[1::2]))
        for key, _ in pairs:
            if not isinstance(key, str):
                raise APIError(6320, info=f"filter key {key!r} is not a string")
        return pairs
    raise APIError(6320, info="filters must be an object or an array of keys and values")


def _all(pairs: list[tuple[str, Any]], depth: int) -> Optional[Node]:
    nodes = [_pair(key, value, depth) for key, value in pairs]
    if not nodes:
        return None
    node = nodes[-1]
    for left in reversed(nodes[:-1]):
        node = And(left, node)
    return node


def _logical(key: str, value: Any, depth: int) -> Node:
    if isinstance(value, (dict, list)) and key in ("-or", "-and"):
        nodes = [_pair(k, v, depth + 1) for k, v in _pairs(value, depth + 1)]
        if not nodes:
            raise APIError(6320, key, f"{key} needs at least one condition")
        node = nodes[-1]
        joiner = Or if key == "-or" else And
        for left in reversed(nodes[:-1]):
            node = joiner(left, node)
        return node
    if key == "-not":
        inner = _all(_pairs(value, depth + 1), depth + 1)
        if inner is None:
            raise APIError(6320, key, "-not needs at least one condition")
        return Not(inner)
    raise APIError(6320, key, f"{key} takes an object or an array of conditions")


def _pair(key: str, value: Any, depth: int) -> Node:
    if key in LOGICAL:
        return _logical(key, value, depth)
    if key.startswith("-"):
        raise APIError(6320, key, f"unknown operator {key}")
    if isinstance(value, dict):
        if len(value) != 1:
            raise APIError(6320, key, "an operator object has exactly one key")
        op, operand = next(iter(value.items()))
        if op not in OPERATORS:
            raise APIError(6320, key, f"unknown operator {op!r}")
        return _compare(key, OPERATORS[op], operand)
    return _compare(key, "=", value)


def _compare(key: str, op: str, operand: Any) -> Node:
    if op == "between":
        if not isinstance(operand, list) or len(operand) != 2:
            raise APIError(6320, key, "-between takes [low, high]")
        return Compare(key, "=", ValueRange(_text(key, operand[0]), _text(key, operand[1])))
    if not isinstance(operand, list):
        return Compare(key, op, _text(key, operand))
    if not operand:
        raise APIError(6320, key, "an empty list of values")
    items = tuple(_text(key, v) for v in operand)
    if op in ("=", "!="):
        return Compare(key, op, ValueList(items))
    node: Node = Compare(key, op, items[-1])
    for item in reversed(items[:-1]):
        node = Or(Compare(key, op, item), node)
    return node


def _text(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise APIError(6320, key, f"value {value!r} is not a string, number or boolean")
