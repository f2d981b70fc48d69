"""The API's JSON filters against a plain-Python reading of the same filters
(hypothesis): what ``user_get_list`` selects over HTTPS from PostgreSQL must be
exactly what the Python evaluation selects from the same rows."""

from __future__ import annotations

import re
from typing import Any, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.api import RunningAPI, Session

WORDS = st.text(alphabet="abc", min_size=0, max_size=3)
PATTERNS = st.text(alphabet="ab%_", min_size=0, max_size=4)


@pytest.fixture(scope="module")
def people(api: RunningAPI, superadmin: Session) -> tuple[int, list[dict[str, Any]]]:
    tenant = superadmin.ok("tenant_create", arguments={"name": "filters"})["rows"][0]["id"]
    rows = []
    names = ["a", "b", "c", "ab", "ba", "abc", "cab", "aa", "bb", "cc", "aab", "bca", "acb",
             "bac", "ca", "ccc"]
    for n, name in enumerate(names):
        description = None if n % 4 == 0 else ["a", "b", "ab", "abc"][n % 4]
        arguments = {"tenant_id": tenant, "name": name, "password": "x", "blocked": n % 3 == 0}
        if description is not None:
            arguments["description"] = description
        new_id = superadmin.ok("user_create", arguments=arguments)["rows"][0]["id"]
        rows.append({"id": new_id, "name": name, "blocked": n % 3 == 0,
                     "description": description})
    return tenant, rows


def ids_of(rows: list[dict[str, Any]]) -> list[int]:
    return [r["id"] for r in rows]


def leaf(ids: list[int]) -> st.SearchStrategy:
    id_values = st.sampled_from(ids + [0, ids[len(ids) // 2] + 1000])
    scalar_ops = st.sampled_from(["=", "!=", "<>", "<", ">", "<=", ">="])
    return st.one_of(
        st.tuples(st.just("id"), scalar_ops, id_values),
        st.tuples(st.just("id"), st.sampled_from(["=", "!="]), st.lists(id_values, min_size=1,
                                                                         max_size=3)),
        st.tuples(st.just("id"), st.just("-between"), st.tuples(id_values, id_values).map(list)),
        st.tuples(st.sampled_from(["name", "description"]), scalar_ops, WORDS),
        st.tuples(st.sampled_from(["name", "description"]), st.sampled_from(["~", "LIKE"]),
                  PATTERNS),
        st.tuples(st.just("name"), st.just("plain"), WORDS),
        st.tuples(st.just("blocked"), st.sampled_from(["=", "!="]), st.booleans()),
    )


def tree(ids: list[int]) -> st.SearchStrategy:
    return st.recursive(
        leaf(ids),
        lambda children: st.one_of(
            st.tuples(st.sampled_from(["-and", "-or"]), st.lists(children, min_size=1, max_size=3)),
            st.tuples(st.just("-not"), st.lists(children, min_size=1, max_size=2))),
        max_leaves=6)


def to_json(node: tuple) -> list:
    """A filter as the API takes it: an array of alternating keys and values."""
    if node[0] in ("-and", "-or", "-not"):
        return [node[0], [x for child in node[1] for x in to_json(child)]]
    key, op, value = node
    if op == "plain":
        return [key, value]
    return [key, {op: value}]


def like(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "%" else "." if c == "_" else re.escape(c)
                              for c in pattern), re.S)


def holds(node: tuple, row: dict[str, Any]) -> bool:
    kind = node[0]
    if kind == "-and":
        return all(holds(c, row) for c in node[1])
    if kind == "-or":
        return any(holds(c, row) for c in node[1])
    if kind == "-not":
        return not all(holds(c, row) for c in node[1])
    key, op, value = node
    actual: Optional[Any] = row[key]
    if actual is None:
        return False  # a comparison with an empty column is false
    if op == "plain":
        op = "="
    if op in ("~", "LIKE"):
        return bool(like(value).fullmatch(actual))
    if op == "-between":
        return value[0] <= actual <= value[1]
    if isinstance(value, list):
        return (actual in value) == (op == "=")
    return {"=": actual == value, "!=": actual != value, "<>": actual != value,
            "<": actual < value, ">": actual > value, "<=": actual <= value,
            ">=": actual >= value}[op]


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_api_filters_select_what_python_says(superadmin: Session, people, data) -> None:
    tenant, rows = people
    node = data.draw(tree(ids_of(rows)))
    answer = superadmin.call("user_get_list", filters=["tenant_id", tenant] + to_json(node),
                             fields=["id"])
    assert answer["status"] == 0, answer
    expected = sorted(r["id"] for r in rows if holds(node, r))
    assert sorted(r["id"] for r in answer["rows"]) == expected, to_json(node)
    assert answer["total"] == len(expected)
