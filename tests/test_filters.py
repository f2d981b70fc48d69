"""The qa filter language: the parser, the SQL it becomes, and both against PostgreSQL."""

from __future__ import annotations

import random
import re
from typing import Any, Callable, Iterator, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qvd.admin.filters import (
    And,
    Compare,
    Field,
    FilterError,
    Node,
    Not,
    Operand,
    Or,
    ValueList,
    ValueRange,
    holds,
    parse,
    to_sql,
)
from tests.support.postgres import drop_database, new_database


def c(key: str, value: Operand = "value", op: str = "=") -> Compare:
    return Compare(key, op, value)


# --- parser ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, tree",
    [
        # the manual's examples of logical operators
        ("key1=value, key2=value, key3=value", And(c("key1"), And(c("key2"), c("key3")))),
        ("(key1=value; key2=value), key3=value", And(Or(c("key1"), c("key2")), c("key3"))),
        ("!key1=value", Not(c("key1"))),
        ("!key1=value, key2=value, key3=value", Not(And(c("key1"), And(c("key2"), c("key3"))))),
        ("(! key1=value), key2=value, key3=value", And(Not(c("key1")), And(c("key2"), c("key3")))),
        # mixing ',' and ';': each takes everything to its right
        ("a=1, b=2; c=3", And(c("a", "1"), Or(c("b", "2"), c("c", "3")))),
        ("a=1; b=2, c=3", Or(c("a", "1"), And(c("b", "2"), c("c", "3")))),
        ("a=1, !b=2; c=3", And(c("a", "1"), Not(Or(c("b", "2"), c("c", "3"))))),
        ("!!a=1", Not(Not(c("a", "1")))),
        ("((a=1))", c("a", "1")),
        # the manual's values and operators
        ("key1 = 1", c("key1", "1")),
        ("key=This_is_a_chain", c("key", "This_is_a_chain")),
        ("key='This is a chain'", c("key", "This is a chain")),
        ('key~"%s is a ch%"', c("key", "%s is a ch%", "~")),
        ("name~qvd%", c("name", "qvd%", "~")),
        ("id>-1", c("id", "-1", ">")),
        ("ip=10.3.15.1", c("ip", "10.3.15.1")),
        ("disk_image=1000-ubuntu-13-04.tar.gz", c("disk_image", "1000-ubuntu-13-04.tar.gz")),
        ("id=[1, 2, 3]", c("id", ValueList(("1", "2", "3")))),
        ("id!=[1,2,3]", c("id", ValueList(("1", "2", "3")), "!=")),
        ("id=[1:3]", c("id", ValueRange("1", "3"))),
        ("id != [ 1 : 3 ]", c("id", ValueRange("1", "3"), "!=")),
        ("name=['a b', \"c,d\", e]", c("name", ValueList(("a b", "c,d", "e")))),
        (
            "a<1, b>2, c<=3, d>=4",
            And(c("a", "1", "<"), And(c("b", "2", ">"), And(c("c", "3", "<="), c("d", "4", ">=")))),
        ),
        # quoting: a doubled quote is one quote; backslashes are literal
        ("a='it''s'", c("a", "it's")),
        ('a="say ""hi"""', c("a", 'say "hi"')),
        ("a=''", c("a", "")),
        ("a='C:\\dir'", c("a", "C:\\dir")),
        ("a='x=1, y=2; !(z)'", c("a", "x=1, y=2; !(z)")),
        # ':' is part of a bare word outside brackets
        ("at=10:30", c("at", "10:30")),
        ("a=é€", c("a", "é€")),
        # the default key
        ("myVM", c("name", "myVM")),
        ("  'my VM'  ", c("name", "my VM")),
        ("qvd%", c("name", "qvd%")),
    ],
)
def test_parse(text: str, tree: Node) -> None:
    assert parse(text) == tree


def test_default_key_is_configurable() -> None:
    assert parse("42", default_key="id") == c("id", "42")


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_empty_filter_matches_everything(text: str) -> None:
    assert parse(text) is None
    assert to_sql(None, {}, "vm") == ("TRUE", [])


@pytest.mark.parametrize(
    "text, message",
    [
        ("name=", "column 6: expected a value after '=' but found the end of the filter"),
        ("=x", "column 1: expected a condition (a key, '!' or '(') but found '='"),
        ("(a=1", "column 5: expected ',', ';' or ')' to close the '(' at column 1"),
        ("a=1)", "column 4: found ')' without a matching '('"),
        ("a=[1,2", "column 7: expected ',' or ']' in the list but found the end of the filter"),
        ("a=[1:2:3]", "column 7: expected ']' to end the range but found ':'"),
        ("a==1", "column 3: expected a value after '=' but found '='"),
        ("a=1,,b=2", "column 5: expected a condition (a key, '!' or '(') but found ','"),
        ("!", "column 2: expected a condition"),
        ("a=1;", "column 5: expected a condition"),
        ("a=1 b=2", "column 5: expected ',' (and), ';' (or) or the end of the filter but found 'b'"),
        ("'abc", "column 1: the string opened with ' has no closing '"),
        ('a="abc', 'column 3: the string opened with " has no closing "'),
        ("a='it''", "column 3: the string opened with ' has no closing '"),
        ("a b", "column 3: expected an operator after 'a' but found 'b'"),
        ("a-b=1", "column 1: 'a-b' is not a key"),
        ("'a'=1", "column 1: expected a condition (a key, '!' or '(') but found the quoted string 'a'"),
        ("a<[1,2]", "column 3: a list or range needs '=' or '!=', not '<'"),
        ("a~[1:2]", "column 3: a list or range needs '=' or '!=', not '~'"),
        ("a=[]", "column 4: expected a value after '[' but found ']'"),
        ("a=[1,]", "column 6: expected a value after ',' but found ']'"),
        ("a=[1:]", "column 6: expected a value after ':' but found ']'"),
        ("a=[[1]]", "column 4: expected a value after '[' but found '['"),
        ("a=1]", "column 4: expected ',' (and), ';' (or) or the end of the filter but found ']'"),
        ("a=(1)", "column 3: expected a value after '=' but found '('"),
        ("()", "column 2: expected a condition"),
        ("a=b=c", "column 4: expected ',' (and), ';' (or) or the end of the filter but found '='"),
        ("my VM", "column 4: expected an operator after 'my' but found 'VM'"),
        ("(" * 101 + "a=1" + ")" * 101, "column 101: more than 100 nested parentheses"),
    ],
)
def test_malformed_filters_are_explained(text: str, message: str) -> None:
    with pytest.raises(FilterError) as caught:
        parse(text)
    assert str(caught.value).startswith("filter syntax error at " + message)


@pytest.mark.parametrize("text", ["!" * 101 + "a=1", ", ".join(["a=1"] * 102)])
def test_overly_complex_filters_are_refused(text: str) -> None:
    with pytest.raises(FilterError, match="too complex"):
        parse(text)


# --- SQL ---------------------------------------------------------------------

VM_FIELDS = {
    "id": Field("v.id", "int"),
    "name": Field("v.name", "str"),
    "blocked": Field("v.blocked", "bool"),
    "load": Field("v.load", "float"),
    "expires": Field("v.expires", "timestamp"),
}


def sql(text: str) -> tuple[str, list]:
    return to_sql(parse(text), VM_FIELDS, "vm")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("id=3", ("COALESCE((v.id = %s), FALSE)", [3])),
        ("id!=-3", ("COALESCE((v.id <> %s), FALSE)", [-3])),
        ("load>=1.5", ("COALESCE((v.load >= %s), FALSE)", [1.5])),
        ("name~'qvd%'", ("COALESCE((v.name LIKE %s), FALSE)", ["qvd%"])),
        ("id~'1%'", ("COALESCE((CAST(v.id AS text) LIKE %s), FALSE)", ["1%"])),
        ("expires<'2024-01-01'", ("COALESCE((v.expires < CAST(%s AS timestamp)), FALSE)", ["2024-01-01"])),
        ("id=[1,2]", ("COALESCE((v.id IN (%s, %s)), FALSE)", [1, 2])),
        ("id!=[1,2]", ("COALESCE((v.id NOT IN (%s, %s)), FALSE)", [1, 2])),
        ("id=[1:3]", ("COALESCE((v.id BETWEEN %s AND %s), FALSE)", [1, 3])),
        ("id!=[1:3]", ("COALESCE((v.id NOT BETWEEN %s AND %s), FALSE)", [1, 3])),
        ("expires=[a:b]", (
            "COALESCE((v.expires BETWEEN CAST(%s AS timestamp) AND CAST(%s AS timestamp)), FALSE)",
            ["a", "b"],
        )),
        ("!name=x, id=1; id=2", (
            "(NOT (COALESCE((v.name = %s), FALSE) AND"
            " (COALESCE((v.id = %s), FALSE) OR COALESCE((v.id = %s), FALSE))))",
            ["x", 1, 2],
        )),
    ],
)
def test_to_sql(text: str, expected: tuple[str, list]) -> None:
    assert sql(text) == expected


@pytest.mark.parametrize(
    "words, value",
    [
        (["1", "true", "TRUE", "yes", "Yes", "y", "Y"], True),
        (["0", "false", "False", "no", "NO", "n", "N"], False),
    ],
)
def test_boolean_spellings(words: list[str], value: bool) -> None:
    for word in words:
        assert sql(f"blocked={word}")[1] == [value]


@pytest.mark.parametrize(
    "text, message",
    [
        ("host=foo", "unknown key 'host' for vm; known keys: blocked, expires, id, load, name"),
        ("id=abc", "value 'abc' for 'id' must be an integer"),
        ("id=1.5", "value '1.5' for 'id' must be an integer"),
        ("id=[1, x]", "value 'x' for 'id' must be an integer"),
        ("load=nan", "value 'nan' for 'load' must be a finite number"),
        ("load=1e999", "value '1e999' for 'load' must be a finite number"),
        ("blocked=maybe", "value 'maybe' for 'blocked' must be yes/no, y/n, true/false or 1/0"),
        ("blocked<1", "'blocked' is yes/no: it can only be compared with '=', '!=' or '~'"),
        ("blocked=[0:1]", "'blocked' is yes/no: it can only be compared with '=', '!=' or '~'"),
        ("name~'abc\\'", "pattern 'abc\\\\' for 'name' ends with an unfinished '\\' escape"),
    ],
)
def test_bad_values_are_explained(text: str, message: str) -> None:
    with pytest.raises(FilterError) as caught:
        sql(text)
    assert str(caught.value) == message


def test_escaped_backslash_ends_a_pattern_fine() -> None:
    assert sql("name~'abc\\\\'")[1] == ["abc\\\\"]


@pytest.mark.parametrize(
    "tree, message",
    [
        (c("id", ValueList(())), "the list of values for 'id' is empty"),
        (c("id", ValueList(("1",)), "<"), "a list or range for 'id' needs '=' or '!=', not '<'"),
        (c("id", "1", "=="), "unknown operator '=='"),
        (c("name", "a\0b"), "value 'a\\x00b' for 'name' contains a NUL character"),
        (c("name", "\udcff"), "value '\\udcff' for 'name' is not valid text"),
    ],
)
def test_trees_built_by_hand_are_checked_too(tree: Node, message: str) -> None:
    with pytest.raises(FilterError) as caught:
        to_sql(tree, VM_FIELDS, "vm")
    assert str(caught.value).startswith(message)


def test_percent_in_field_sql_is_escaped() -> None:
    assert to_sql(parse("odd=1"), {"odd": Field("v.id % 2", "int")}, "vm") == (
        "COALESCE((v.id %% 2 = %s), FALSE)",
        [1],
    )


def test_field_type_is_checked() -> None:
    with pytest.raises(ValueError):
        Field("v.id", "integer")  # type: ignore[arg-type]


# --- random text -------------------------------------------------------------

GRAMMAR_CHARS = "ab_1-=!<>~,;()[]:'\" %\\\t"


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet=GRAMMAR_CHARS)), st.randoms(use_true_random=False))
def test_any_text_parses_or_is_refused(text: str, rnd: random.Random) -> None:
    try:
        tree = parse(text)
    except FilterError:
        return
    fields = {key: Field(f"col_{i}", rnd.choice(["int", "str", "bool", "float", "timestamp"]))
              for i, key in enumerate(sorted(keys_of(tree)))}
    try:
        where, params = to_sql(tree, fields, "thing")
    except FilterError:
        return
    assert SAFE_SQL.fullmatch(where), where
    assert where.count("%s") == len(params)


SAFE_SQL = re.compile(
    r"(?:\s+|COALESCE|FALSE|TRUE|NOT|AND|OR|IN|BETWEEN|LIKE|CAST|AS|text|timestamp"
    r"|col_\d+|%s|<>|<=|>=|[=<>(),])*"
)


def keys_of(tree: Optional[Node]) -> set[str]:
    if tree is None:
        return set()
    if isinstance(tree, (And, Or)):
        return keys_of(tree.left) | keys_of(tree.right)
    if isinstance(tree, Not):
        return keys_of(tree.operand)
    return {tree.key}


# --- against PostgreSQL ------------------------------------------------------
#
# Random rows, random filter trees rendered to text: the text must parse
# back to the tree, and PostgreSQL must select exactly the rows that a
# plain-Python reading of the tree selects.

TABLE_FIELDS = {
    "n": Field("t.n", "int"),
    "s": Field("t.s", "str"),
    "b": Field("t.b", "bool"),
    "f": Field("t.f", "float"),
}

TRICKY = [
    "", "a", "b", "a b", "it's", '"q"', "50%", "a_b", "[x]", "x:y", "a,b;c", "é", "😀", "\\", "(!)", "=~<>",
]
texts = st.one_of(st.sampled_from(TRICKY), st.text(alphabet="ab%_ '\",;:[]()!=<>~\\é😀\t", max_size=3))
ints = st.one_of(st.integers(-3, 3).map(str), st.sampled_from(["+2", "-0", "007"]))
halves = st.integers(-6, 6).map(lambda k: k / 2)
floats = st.one_of(halves.map(str), st.sampled_from(["1", "-0", "1e0", ".5", "+1.5"]))
bools = st.sampled_from(["1", "0", "true", "FALSE", "Yes", "no", "y", "N"])
VALUES = {"n": ints, "s": texts, "b": bools, "f": floats}


def complete_escape(pattern: str) -> str:
    """The pattern, with a trailing lone backslash (an unfinished LIKE escape) completed."""
    return pattern + "x" if (len(pattern) - len(pattern.rstrip("\\"))) % 2 else pattern


PATTERNS = {
    "n": st.text(alphabet="%_-0123\\", max_size=4).map(complete_escape),
    "s": st.one_of(texts, st.sampled_from(["%", "a%", "%\\%", "_", "\\_%", "%b"])).map(complete_escape),
    "b": st.text(alphabet="%_truefals\\", max_size=5).map(complete_escape),
}


@st.composite
def comparisons(draw: st.DrawFn) -> Compare:
    key = draw(st.sampled_from("nsbf"))
    shape = draw(st.sampled_from(["scalar", "list"] if key == "b" else ["scalar", "list", "range"]))
    values = VALUES[key]
    if shape == "list":
        items = draw(st.lists(values, min_size=1, max_size=3))
        return Compare(key, draw(st.sampled_from(["=", "!="])), ValueList(tuple(items)))
    if shape == "range":
        return Compare(key, draw(st.sampled_from(["=", "!="])), ValueRange(draw(values), draw(values)))
    ops = ["=", "!="] + ([] if key == "b" else ["<", ">", "<=", ">="]) + ([] if key == "f" else ["~"])
    op = draw(st.sampled_from(ops))
    return Compare(key, op, draw(PATTERNS[key] if op == "~" else values))


trees = st.recursive(
    comparisons(),
    lambda sub: st.one_of(st.builds(And, sub, sub), st.builds(Or, sub, sub), st.builds(Not, sub)),
    max_leaves=8,
)

Row = tuple[Optional[int], Optional[str], Optional[bool], Optional[float]]
rows = st.lists(
    st.tuples(
        st.none() | st.integers(-3, 3),
        st.none() | texts,
        st.none() | st.booleans(),
        st.none() | halves,
    ),
    min_size=2,
    max_size=8,
)


# rendering


def render(tree: Node, rnd: random.Random) -> str:
    """Filter text for ``tree``, with random spacing, quoting and extra parentheses."""
    if isinstance(tree, Compare):
        text = f"{tree.key}{space(rnd)}{tree.op}{space(rnd)}{render_operand(tree.value, rnd)}"
    elif isinstance(tree, Not):
        text = f"!{space(rnd)}{render(tree.operand, rnd)}"  # '!' takes everything to its right
    else:
        left = render(tree.left, rnd)
        if not isinstance(tree.left, Compare):  # its operator would swallow what follows
            left = f"({left})"
        joiner = "," if isinstance(tree, And) else ";"
        text = f"{left}{space(rnd)}{joiner}{space(rnd)}{render(tree.right, rnd)}"
    return f"({space(rnd)}{text}{space(rnd)})" if rnd.random() < 0.1 else text


def render_operand(value: Operand, rnd: random.Random) -> str:
    if isinstance(value, ValueList):
        sep = f"{space(rnd)},{space(rnd)}"
        return f"[{sep.join(render_value(v, rnd, in_brackets=True) for v in value.items)}]"
    if isinstance(value, ValueRange):
        low, high = (render_value(v, rnd, in_brackets=True) for v in (value.low, value.high))
        return f"[{low}{space(rnd)}:{space(rnd)}{high}]"
    return render_value(value, rnd, in_brackets=False)


def render_value(value: str, rnd: random.Random, in_brackets: bool) -> str:
    stops = "'\"=!<>~,;()[]" + (":" if in_brackets else "")
    bare = value and not any(ch.isspace() or ch in stops for ch in value)
    if bare and rnd.random() < 0.7:
        return value
    quote = rnd.choice("'\"")
    return quote + value.replace(quote, quote * 2) + quote


def space(rnd: random.Random) -> str:
    return rnd.choice(["", "", " ", "  "])


# evaluating


def evaluate(tree: Node, row: Row) -> bool:
    return holds(tree, lambda comparison: evaluate_comparison(comparison, row))


def evaluate_comparison(tree: Compare, row: Row) -> bool:
    column = row["nsbf".index(tree.key)]
    if column is None:  # two-valued logic: a comparison with NULL is false
        return False
    return compare(tree, column)


CONVERT: dict[str, Callable[[str], Any]] = {
    "n": int,
    "s": str,
    "f": float,
    "b": lambda v: v.lower() in ("1", "true", "yes", "y"),
}


def compare(tree: Compare, column: Any) -> bool:
    convert = CONVERT[tree.key]
    value = tree.value
    if isinstance(value, ValueList):
        return (column in [convert(v) for v in value.items]) == (tree.op == "=")
    if isinstance(value, ValueRange):
        return (convert(value.low) <= column <= convert(value.high)) == (tree.op == "=")
    if tree.op == "~":
        text = {True: "true", False: "false"}[column] if isinstance(column, bool) else str(column)
        return like(text, value)
    operand = convert(value)
    return {
        "=": column == operand,
        "!=": column != operand,
        "<": column < operand,
        ">": column > operand,
        "<=": column <= operand,
        ">=": column >= operand,
    }[tree.op]


def like(text: str, pattern: str) -> bool:
    """SQL LIKE: '%' any run, '_' one character, backslash escapes the next character."""
    regex, chars = [], iter(pattern)
    for ch in chars:
        if ch == "\\":
            regex.append(re.escape(next(chars)))
        else:
            regex.append({"%": ".*", "_": "."}.get(ch) or re.escape(ch))
    return re.fullmatch("".join(regex), text, re.DOTALL) is not None


# the database


@pytest.fixture(scope="module")
def conn() -> Iterator[Any]:
    db = new_database(deployed=False)
    connection = db.connect()
    try:
        with connection, connection.cursor() as cur:
            cur.execute(
                "CREATE TABLE t (id integer PRIMARY KEY, n integer, s text COLLATE \"C\","
                " b boolean, f double precision, ts timestamp)"
            )
        yield connection
    finally:
        connection.close()
        drop_database(db)


def select(conn: Any, rows: list[Row], where: str, params: list) -> set[int]:
    """The ids of ``rows`` that ``where`` selects, in a transaction rolled back after."""
    try:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO t (id, n, s, b, f) VALUES (%s, %s, %s, %s, %s)",
                [(i, *row) for i, row in enumerate(rows)],
            )
            cur.execute(f"SELECT id FROM t WHERE {where}", params)
            return {i for (i,) in cur.fetchall()}
    finally:
        conn.rollback()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees, table=rows, rnd=st.randoms(use_true_random=False))
def test_postgresql_agrees_with_the_filter_meaning(
    conn: Any, tree: Node, table: list[Row], rnd: random.Random
) -> None:
    text = render(tree, rnd)
    assert parse(text) == tree, text
    where, params = to_sql(parse(text), TABLE_FIELDS, "t")
    expected = {i for i, row in enumerate(table) if evaluate(tree, row)}
    assert select(conn, table, where, params) == expected, (text, where, params)


def test_negation_includes_null_columns(conn: Any) -> None:
    table: list[Row] = [(1, "foo", None, None), (2, "bar", None, None), (3, None, None, None)]
    where, params = to_sql(parse("!s=foo"), TABLE_FIELDS, "t")
    assert select(conn, table, where, params) == {1, 2}  # "bar", and the row with no s


def test_timestamps_are_cast(conn: Any) -> None:
    fields = {"ts": Field("t.ts", "timestamp")}
    where, params = to_sql(parse("ts>'2024-01-01 12:00', ts=[2024-01-01:2024-12-31]"), fields, "t")
    try:
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO t (id, ts) VALUES"
                " (1, '2024-01-01 11:00'), (2, '2024-06-01'), (3, NULL), (4, '2025-01-01')"
            )
            cur.execute(f"SELECT id FROM t WHERE {where}", params)
            assert {i for (i,) in cur.fetchall()} == {2}
    finally:
        conn.rollback()
