"""Just enough GraphQL for the fake builds.sr.ht: a parser of executable documents, free of I/O.

It reads operations (``query``/``mutation``, anonymous or named, with variable definitions), selection sets
with aliases and arguments, and every literal kind. Fragments and directives are refused with a
``GqlSyntaxError`` that says the fake does not support them (the real server would accept them; no tack
query needs them).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any


class GqlSyntaxError(Exception):
    """The document does not parse (gqlgen answers these with 422 and ``GRAPHQL_PARSE_FAILED``)."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


@dataclass(frozen=True)
class Variable:
    """``$name`` used as a value."""

    name: str


@dataclass(frozen=True)
class EnumValue:
    """A bare name used as a value (``PUBLIC``)."""

    name: str


@dataclass(frozen=True)
class TypeRef:
    """A variable's declared type: ``name``, or a list of ``of``; ``required`` for ``!``."""

    name: str | None
    of: TypeRef | None
    required: bool

    def __str__(self) -> str:
        inner = self.name if self.of is None else f"[{self.of}]"
        return f"{inner}!" if self.required else str(inner)


@dataclass
class Field:
    """One selected field: ``alias: name(args) { selections }``."""

    name: str
    alias: str | None
    arguments: dict[str, Any]
    selections: list[Field]
    line: int
    column: int

    @property
    def key(self) -> str:
        """The name the field's value has in the answer."""
        return self.alias or self.name


@dataclass
class VariableDefinition:
    name: str
    type: TypeRef
    default: Any = None
    has_default: bool = False


@dataclass
class Operation:
    kind: str  # "query" or "mutation"
    name: str | None
    variables: list[VariableDefinition] = field(default_factory=list)
    selections: list[Field] = field(default_factory=list)


_TOKEN = re.compile(
    r"""
    (?P<ignored>[\s,\ufeff]+|\#[^\n\r]*)
  | (?P<spread>\.\.\.)
  | (?P<punct>[!$&()\:=@\[\]{}|])
  | (?P<name>[_A-Za-z][_0-9A-Za-z]*)
  | (?P<float>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][+-]?[0-9]+)?|[eE][+-]?[0-9]+))
  | (?P<int>-?(?:0|[1-9][0-9]*))
  | (?P<block>\"\"\"(?:\\\"\"\"|[^\"]|\"(?!\"\"))*\"\"\")
  | (?P<string>\"(?:\\["\\/bfnrt]|\\u[0-9A-Fa-f]{4}|[^"\\\n\r])*\")
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    line: int
    column: int


def _tokens(source: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    line, line_start = 1, 0
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        column = pos - line_start + 1
        if match is None:
            raise GqlSyntaxError(f"Unexpected {source[pos]!r}", line, column)
        kind = match.lastgroup or ""
        text = match.group()
        if kind != "ignored":
            out.append(_Tok(kind, text, line, column))
        newlines = text.count("\n")
        if newlines:
            line += newlines
            line_start = match.start() + text.rindex("\n") + 1
        pos = match.end()
    out.append(_Tok("eof", "", line, pos - line_start + 1))
    return out


def _block_string(raw: str) -> str:
    lines = raw[3:-3].replace('\\"""', '"""').splitlines()
    indents = [len(x) - len(x.lstrip(" \t")) for x in lines[1:] if x.strip()]
    common = min(indents, default=0)
    body = [lines[0], *(x[common:] for x in lines[1:])] if lines else []
    while body and not body[0].strip():
        body.pop(0)
    while body and not body[-1].strip():
        body.pop()
    return "\n".join(body)


class _Parser:
    def __init__(self, source: str) -> None:
        self.toks = _tokens(source)
        self.i = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def error(self, message: str) -> GqlSyntaxError:
        return GqlSyntaxError(message, self.tok.line, self.tok.column)

    def peek(self, text: str) -> bool:
        return self.tok.kind in ("punct", "spread") and self.tok.text == text

    def take(self, text: str) -> _Tok:
        if not self.peek(text):
            shown = self.tok.text or "<EOF>"
            raise self.error(f"Expected {text}, found {shown}")
        self.i += 1
        return self.toks[self.i - 1]

    def name(self) -> str:
        if self.tok.kind != "name":
            shown = self.tok.text or "<EOF>"
            raise self.error(f"Expected Name, found {shown}")
        self.i += 1
        return self.toks[self.i - 1].text

    def document(self) -> list[Operation]:
        ops: list[Operation] = []
        while self.tok.kind != "eof":
            ops.append(self.operation())
        if not ops:
            raise self.error("Unexpected <EOF>")
        return ops

    def operation(self) -> Operation:
        if self.peek("{"):
            return Operation("query", None, [], self.selection_set())
        word = self.name()
        if word == "fragment":
            raise self.error("the fake builds.sr.ht does not support fragments")
        if word not in ("query", "mutation", "subscription"):
            raise GqlSyntaxError(
                f"Unexpected Name {word!r}", self.toks[self.i - 1].line, self.toks[self.i - 1].column
            )
        name = self.name() if self.tok.kind == "name" else None
        variables = self.variable_definitions() if self.peek("(") else []
        self.no_directives()
        return Operation(word, name, variables, self.selection_set())

    def no_directives(self) -> None:
        if self.peek("@"):
            raise self.error("the fake builds.sr.ht does not support directives")

    def variable_definitions(self) -> list[VariableDefinition]:
        self.take("(")
        out: list[VariableDefinition] = []
        while not self.peek(")"):
            self.take("$")
            name = self.name()
            self.take(":")
            vtype = self.type_ref()
            definition = VariableDefinition(name, vtype)
            if self.peek("="):
                self.take("=")
                definition.default = self.value(const=True)
                definition.has_default = True
            self.no_directives()
            out.append(definition)
        self.take(")")
        return out

    def type_ref(self) -> TypeRef:
        if self.peek("["):
            self.take("[")
            inner = self.type_ref()
            self.take("]")
            ref = TypeRef(None, inner, False)
        else:
            ref = TypeRef(self.name(), None, False)
        if self.peek("!"):
            self.take("!")
            ref = TypeRef(ref.name, ref.of, True)
        return ref

    def selection_set(self) -> list[Field]:
        self.take("{")
        out: list[Field] = []
        while not self.peek("}"):
            if self.peek("..."):
                raise self.error("the fake builds.sr.ht does not support fragments")
            out.append(self.field())
        self.take("}")
        if not out:
            raise self.error("Expected Name, found }")
        return out

    def field(self) -> Field:
        start = self.tok
        name = self.name()
        alias = None
        if self.peek(":"):
            self.take(":")
            alias, name = name, self.name()
        arguments: dict[str, Any] = {}
        if self.peek("("):
            self.take("(")
            while not self.peek(")"):
                arg = self.name()
                if arg in arguments:
                    raise self.error(f'There can be only one argument named "{arg}".')
                self.take(":")
                arguments[arg] = self.value(const=False)
            self.take(")")
        self.no_directives()
        selections = self.selection_set() if self.peek("{") else []
        return Field(name, alias, arguments, selections, start.line, start.column)

    def value(self, *, const: bool) -> Any:
        tok = self.tok
        if tok.kind == "punct" and tok.text == "$":
            if const:
                raise self.error("Unexpected $")
            self.i += 1
            return Variable(self.name())
        if tok.kind == "punct" and tok.text == "[":
            self.i += 1
            items = []
            while not self.peek("]"):
                items.append(self.value(const=const))
            self.take("]")
            return items
        if tok.kind == "punct" and tok.text == "{":
            self.i += 1
            obj: dict[str, Any] = {}
            while not self.peek("}"):
                key = self.name()
                self.take(":")
                obj[key] = self.value(const=const)
            self.take("}")
            return obj
        self.i += 1
        if tok.kind == "int":
            return int(tok.text)
        if tok.kind == "float":
            return float(tok.text)
        if tok.kind == "string":
            return json.loads(tok.text)
        if tok.kind == "block":
            return _block_string(tok.text)
        if tok.kind == "name":
            if tok.text in ("true", "false"):
                return tok.text == "true"
            if tok.text == "null":
                return None
            return EnumValue(tok.text)
        self.i -= 1
        raise self.error(f"Unexpected {tok.text or '<EOF>'}")


def parse(source: str) -> list[Operation]:
    """The operations of an executable GraphQL document; ``GqlSyntaxError`` if it does not parse."""
    return _Parser(source).document()
