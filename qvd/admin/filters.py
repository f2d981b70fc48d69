"""The ``qa`` filter language (QVD 4's ``qa4`` object filters), parsed and turned into SQL.

A filter selects objects, e.g. ``qa vm state=running, host~'node%' get``.

Grammar (whitespace is allowed between any two tokens)::

    filter     := <nothing> | value | expr       -- a lone value means default_key=value
    expr       := unary ( (',' | ';') expr )?    -- ',' is AND, ';' is OR
    unary      := '!' expr                       -- NOT of everything to its right
                | '(' expr ')'
                | comparison
    comparison := KEY OP operand
    OP         := '=' | '!=' | '<' | '>' | '<=' | '>=' | '~'
    operand    := value
                | '[' value (',' value)* ']'     -- list: IN ('=') / NOT IN ('!=')
                | '[' value ':' value ']'        -- range: BETWEEN, bounds included
    value      := WORD | STRING

Every logical operator takes everything to its right ("left precedence" in
the QVD manual), and ',' and ';' have the same precedence:

* ``a=1, b=2; c=3``   is  a AND (b OR c)
* ``!a=1, b=2``       is  NOT (a AND b)
* ``(!a=1), b=2``     is  (NOT a) AND b

Tokens:

* KEY is a ``\\w+`` identifier.
* WORD is a bare value: a run of characters other than whitespace, quotes
  and ``= ! < > ~ , ; ( ) [ ]``; inside a list ``:`` ends a word too, so
  ``10:30`` needs no quotes outside brackets.  ``-1``, ``qvd%``,
  ``10.3.15.1`` and ``1000-ubuntu-13-04.tar.gz`` are words.
* STRING is quoted with ``'`` or ``"``; the quote character is written
  twice to include it (``'it''s'``); nothing else is special, so
  backslashes are literal.
* ``==`` is not an operator: it is rejected ("expected a value after '='").

``~`` is SQL LIKE: ``%`` matches any run of characters, ``_`` one
character, and a backslash makes the next character literal (PostgreSQL's
default LIKE escape), so ``name~'a\\_%'`` matches names starting ``a_``.

SQL comparisons against NULL are made plainly false (two-valued logic), so
``!host=foo`` also selects objects that have no host at all, as an
administrator expects.  Values never enter the SQL text: they become
``%s`` parameters (psycopg2 style), converted to the field's type first
(timestamps are left to PostgreSQL: ``CAST(%s AS timestamp)``).  ``~`` on a
non-text field matches the field's text form (``CAST(... AS text)``);
ordered comparisons and ranges on yes/no fields are refused.

Filters nesting deeper than ``MAX_DEPTH`` are refused, so that neither the
parser nor code walking the tree can exhaust Python's recursion limit.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Literal, Mapping, Optional, Union

from qvd.config import parse_bool

MAX_DEPTH = 100  # far beyond any typed filter; keeps recursion (ours and callers') safe


class FilterError(ValueError):
    """A filter the user typed cannot be used; the message says why and where."""


@dataclass(frozen=True)
class ValueList:
    """``[a, b, c]``: the key must (``=``) or must not (``!=``) be one of the items."""

    items: tuple[str, ...]


@dataclass(frozen=True)
class ValueRange:
    """``[low:high]``: the key must (``=``) or must not (``!=``) lie between, inclusive."""

    low: str
    high: str


Operand = Union[str, ValueList, ValueRange]


@dataclass(frozen=True)
class Compare:
    """``key op value``: one condition on one field."""

    key: str
    op: str
    value: Operand


@dataclass(frozen=True)
class Binary:
    """Two filters joined by ``,`` or ``;``: the parser, SQL and evaluators treat both alike."""

    left: Node
    right: Node


class And(Binary):
    """``left, right``: both hold."""


class Or(Binary):
    """``left; right``: either holds."""


@dataclass(frozen=True)
class Not:
    """``!operand``: the operand does not hold (NULL columns count as not holding)."""

    operand: Node


Node = Union[Compare, And, Or, Not]


def holds(node: Node, comparison_holds: Callable[[Compare], bool]) -> bool:
    """Whether the tree holds, given whether each comparison does: the one boolean walk
    shared by everything that evaluates a filter in Python rather than in SQL."""
    if isinstance(node, And):
        return holds(node.left, comparison_holds) and holds(node.right, comparison_holds)
    if isinstance(node, Or):
        return holds(node.left, comparison_holds) or holds(node.right, comparison_holds)
    if isinstance(node, Not):
        return not holds(node.operand, comparison_holds)
    return comparison_holds(node)


OPERATORS = ("=", "!=", "<", ">", "<=", ">=", "~")
_ORDERED = ("<", ">", "<=", ">=")
_PUNCTUATION = ",;!()[]:"
_WORD_STOP = frozenset("'\"=!<>~,;()[]")
_KEY = re.compile(r"\w+")


# --- tokenizer ---------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    kind: str  # "word", "string", "op", "end" or the punctuation character itself
    text: str  # the value for words and strings (quotes removed)
    column: int  # 1-based, for error messages

    def describe(self) -> str:
        if self.kind == "end":
            return "the end of the filter"
        if self.kind == "string":
            return f"the quoted string {self.text!r}"
        return repr(self.text)


def _syntax_error(column: int, problem: str) -> FilterError:
    return FilterError(f"filter syntax error at column {column}: {problem}")


def _tokenize(text: str) -> list[_Token]:
    """The filter's tokens, ending with an "end" token."""
    tokens: list[_Token] = []
    i, depth = 0, 0  # depth: inside '[' ... ']', where ':' separates a range
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "'\"":
            i = _read_string(text, i, tokens)
        elif text.startswith(("<=", ">=", "!="), i):
            tokens.append(_Token("op", text[i : i + 2], i + 1))
            i += 2
        elif c in "=<>~":
            tokens.append(_Token("op", c, i + 1))
            i += 1
        elif c in _PUNCTUATION and (c != ":" or depth):
            depth = max(0, depth + {"[": 1, "]": -1}.get(c, 0))
            tokens.append(_Token(c, c, i + 1))
            i += 1
        else:
            i = _read_word(text, i, depth, tokens)
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


def _read_string(text: str, start: int, tokens: list[_Token]) -> int:
    """Read the quoted string at ``start``; return the index just past it."""
    quote, parts, i = text[start], [], start + 1
    while True:
        end = text.find(quote, i)
        if end < 0:
            raise _syntax_error(start + 1, f"the string opened with {quote} has no closing {quote}")
        parts.append(text[i:end])
        if not text.startswith(quote, end + 1):
            tokens.append(_Token("string", quote.join(parts), start + 1))
            return end + 1
        i = end + 2  # a doubled quote stands for one quote character


def _read_word(text: str, start: int, depth: int, tokens: list[_Token]) -> int:
    i = start
    while i < len(text) and not (
        text[i].isspace() or text[i] in _WORD_STOP or (depth and text[i] == ":")
    ):
        i += 1
    tokens.append(_Token("word", text[start:i], start + 1))
    return i


# --- parser ------------------------------------------------------------------


def parse(text: str, default_key: str = "name") -> Optional[Node]:
    """The filter's syntax tree, or None for an empty filter (which matches everything).

    A filter that is a single value with no operator means ``default_key=value``,
    as ``qa4 vm myVM get`` means ``qa4 vm name=myVM get``.
    """
    tokens = _tokenize(text)
    if tokens[0].kind == "end":
        return None
    if len(tokens) == 2 and tokens[0].kind in ("word", "string"):
        return Compare(default_key, "=", tokens[0].text)
    parser = _Parser(tokens)
    node = parser.expr()
    parser.expect_end()
    if _depth(node) > MAX_DEPTH:
        raise FilterError(f"filter is too complex: its conditions nest more than {MAX_DEPTH} deep")
    return node


class _Parser:
    """Recursive descent over the tokens; ',' / ';' chains are folded iteratively."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.parens = 0

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def fail(self, expected: str) -> FilterError:
        token = self.peek()
        return _syntax_error(token.column, f"expected {expected} but found {token.describe()}")

    def expr(self) -> Node:
        """``unary ((','|';') expr)?`` as segments ``!* atom op``, folded from the right."""
        segments: list[tuple[int, Node, str]] = []
        while True:
            nots = 0
            while self.peek().kind == "!":
                self.take()
                nots += 1
            atom = self.atom()
            joiner = self.take().kind if self.peek().kind in (",", ";") else ""
            segments.append((nots, atom, joiner))
            if not joiner:
                return _fold(segments)

    def atom(self) -> Node:
        token = self.peek()
        if token.kind == "(":
            return self.parenthesized()
        if token.kind != "word":
            raise self.fail("a condition (a key, '!' or '(')")
        return self.comparison()

    def parenthesized(self) -> Node:
        opening = self.take()
        self.parens += 1
        if self.parens > MAX_DEPTH:
            raise _syntax_error(opening.column, f"more than {MAX_DEPTH} nested parentheses")
        node = self.expr()
        if self.peek().kind != ")":
            raise self.fail(f"',', ';' or ')' to close the '(' at column {opening.column}")
        self.take()
        self.parens -= 1
        return node

    def comparison(self) -> Node:
        key = self.take()
        if not _KEY.fullmatch(key.text):
            raise _syntax_error(key.column, f"{key.text!r} is not a key (letters, digits and '_' only)")
        if self.peek().kind != "op":
            raise self.fail(f"an operator after {key.text!r}")
        op = self.take()
        return Compare(key.text, op.text, self.operand(op))

    def operand(self, op: _Token) -> Operand:
        if self.peek().kind != "[":
            return self.value(f"a value after {op.text!r}")
        bracket = self.take()
        if op.text not in ("=", "!="):
            raise _syntax_error(bracket.column, f"a list or range needs '=' or '!=', not {op.text!r}")
        first = self.value("a value after '['")
        if self.peek().kind == ":":
            self.take()
            operand: Operand = ValueRange(first, self.value("a value after ':'"))
            self.close_bracket("']' to end the range")
            return operand
        items = [first]
        while self.peek().kind == ",":
            self.take()
            items.append(self.value("a value after ','"))
        self.close_bracket("',' or ']' in the list")
        return ValueList(tuple(items))

    def close_bracket(self, expected: str) -> None:
        if self.peek().kind != "]":
            raise self.fail(expected)
        self.take()

    def value(self, expected: str) -> str:
        if self.peek().kind not in ("word", "string"):
            raise self.fail(expected)
        return self.take().text

    def expect_end(self) -> None:
        token = self.peek()
        if token.kind == ")":
            raise _syntax_error(token.column, "found ')' without a matching '('")
        if token.kind != "end":
            raise self.fail("',' (and), ';' (or) or the end of the filter")


def _fold(segments: list[tuple[int, Node, str]]) -> Node:
    """Build ``!* atom op (!* atom op (...))``: each operator takes all to its right."""
    nots, node, _ = segments[-1]
    node = _negate(node, nots)
    for nots, atom, joiner in reversed(segments[:-1]):
        node = _negate(And(atom, node) if joiner == "," else Or(atom, node), nots)
    return node


def _negate(node: Node, times: int) -> Node:
    for _ in range(times):
        node = Not(node)
    return node


def _depth(node: Node) -> int:
    """Nesting depth, computed without recursion (the tree may be deep)."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        current, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(current, (And, Or)):
            stack += [(current.left, depth + 1), (current.right, depth + 1)]
        elif isinstance(current, Not):
            stack.append((current.operand, depth + 1))
    return deepest


# --- SQL ---------------------------------------------------------------------

FieldType = Literal["int", "str", "bool", "float", "timestamp"]
_FIELD_TYPES = ("int", "str", "bool", "float", "timestamp")


@dataclass(frozen=True)
class Field:
    """A filterable key: a trusted SQL expression (``v.id``) and its value type."""

    sql: str
    type: FieldType

    def __post_init__(self) -> None:
        if self.type not in _FIELD_TYPES:
            raise ValueError(f"field type {self.type!r} is not one of {', '.join(_FIELD_TYPES)}")


def to_sql(node: Optional[Node], fields: Mapping[str, Field], object_name: str) -> tuple[str, list]:
    """A WHERE-clause fragment with ``%s`` placeholders, and its parameters.

    ``fields`` maps the keys an administrator may use for ``object_name``
    (e.g. "vm") to columns.  Each condition is wrapped in
    ``COALESCE(..., FALSE)`` so NULL columns make it false, never unknown.
    """
    params: list = []
    if node is None:
        return "TRUE", params
    return _node_sql(node, fields, object_name, params), params


def _node_sql(node: Node, fields: Mapping[str, Field], object_name: str, params: list) -> str:
    if isinstance(node, (And, Or)):
        joiner = "AND" if isinstance(node, And) else "OR"
        left = _node_sql(node.left, fields, object_name, params)
        right = _node_sql(node.right, fields, object_name, params)
        return f"({left} {joiner} {right})"
    if isinstance(node, Not):
        return f"(NOT {_node_sql(node.operand, fields, object_name, params)})"
    if isinstance(node, Compare):
        return f"COALESCE(({_compare_sql(node, fields, object_name, params)}), FALSE)"
    raise FilterError(f"{node!r} is not a filter condition")


def _compare_sql(node: Compare, fields: Mapping[str, Field], object_name: str, params: list) -> str:
    field = fields.get(node.key)
    if field is None:
        known = ", ".join(sorted(fields)) or "none"
        raise FilterError(f"unknown key {node.key!r} for {object_name}; known keys: {known}")
    if node.op not in OPERATORS:
        raise FilterError(f"unknown operator {node.op!r}; use one of {' '.join(OPERATORS)}")
    column = field.sql.replace("%", "%%")
    if field.type == "bool" and (node.op in _ORDERED or isinstance(node.value, ValueRange)):
        raise FilterError(f"{node.key!r} is yes/no: it can only be compared with '=', '!=' or '~'")
    if isinstance(node.value, str):
        return _scalar_sql(node, field, column, node.value, params)
    if node.op not in ("=", "!="):
        raise FilterError(f"a list or range for {node.key!r} needs '=' or '!=', not {node.op!r}")
    placeholder = "CAST(%s AS timestamp)" if field.type == "timestamp" else "%s"
    negation = "NOT " if node.op == "!=" else ""
    if isinstance(node.value, ValueRange):
        params += [_convert(node.key, field, v) for v in (node.value.low, node.value.high)]
        return f"{column} {negation}BETWEEN {placeholder} AND {placeholder}"
    if not node.value.items:
        raise FilterError(f"the list of values for {node.key!r} is empty")
    params += [_convert(node.key, field, v) for v in node.value.items]
    return f"{column} {negation}IN ({', '.join([placeholder] * len(node.value.items))})"


def _scalar_sql(node: Compare, field: Field, column: str, value: str, params: list) -> str:
    if node.op == "~":
        params.append(_like_pattern(node.key, value))
        text = column if field.type == "str" else f"CAST({column} AS text)"
        return f"{text} LIKE %s"
    params.append(_convert(node.key, field, value))
    placeholder = "CAST(%s AS timestamp)" if field.type == "timestamp" else "%s"
    return f"{column} {'<>' if node.op == '!=' else node.op} {placeholder}"


def _like_pattern(key: str, pattern: str) -> str:
    text = _text(key, pattern)
    if (len(text) - len(text.rstrip("\\"))) % 2:
        raise FilterError(f"pattern {pattern!r} for {key!r} ends with an unfinished '\\' escape")
    return text


_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
def _convert(key: str, field: Field, value: str) -> object:
    """The parameter for ``value`` compared with ``field``, or a FilterError."""
    text = _text(key, value)
    if field.type == "int":
        if not _INTEGER.fullmatch(text):
            raise FilterError(f"value {value!r} for {key!r} must be an integer")
        try:
            return int(text)
        except ValueError:  # more digits than Python converts
            raise FilterError(f"value {value!r} for {key!r} is too long for an integer") from None
    if field.type == "float":
        number = float(text) if _DECIMAL.fullmatch(text) else math.nan
        if not math.isfinite(number):
            raise FilterError(f"value {value!r} for {key!r} must be a finite number")
        return number
    if field.type == "bool":
        flag = parse_bool(text)
        if flag is None:
            raise FilterError(f"value {value!r} for {key!r} must be yes/no, y/n, true/false or 1/0")
        return flag
    return text  # str, or timestamp (the SQL casts it)


def _text(key: str, value: str) -> str:
    """``value`` if PostgreSQL can receive it as text (no NUL, valid UTF-8)."""
    if "\0" in value:
        raise FilterError(f"value {value!r} for {key!r} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise FilterError(f"value {value!r} for {key!r} is not valid text") from None
    return value
