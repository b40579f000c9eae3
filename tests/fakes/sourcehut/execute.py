"""Validate and run a parsed operation against a schema subset, the way gqlgen does (docs/sourcehut-api.md §1, §2).

Validation failures (unknown fields or arguments, bad variables, complexity) become ``RequestError`` (the
server answers 422). Resolver failures become entries of ``errors`` with the field's ``path``; a null in a
non-null position bubbles up to the nearest nullable parent, as GraphQL requires.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.sourcehut.gql import EnumValue, Field, GqlSyntaxError, Operation, Variable, parse


SCALARS = frozenset({"Int", "String", "Boolean", "Time", "Cursor", "Float"})


class RequestError(Exception):
    """The request is refused before anything runs (HTTP 422)."""

    def __init__(
        self, message: str, code: str = "GRAPHQL_VALIDATION_FAILED", line: int = 0, column: int = 0
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.line = line
        self.column = column

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message}
        if self.line:
            out["locations"] = [{"line": self.line, "column": self.column}]
        out["extensions"] = {"code": self.code}
        return out


class FieldError(Exception):
    """A resolver's failure; its message goes to ``errors`` with the field's path."""


@dataclass(frozen=True)
class Type:
    """A field's or argument's type written as in SDL: ``Job!``, ``[Task!]!``, ``Int``."""

    text: str

    @property
    def required(self) -> bool:
        return self.text.endswith("!")

    @property
    def inner(self) -> Type:
        base = self.text.removesuffix("!")
        return Type(base[1:-1]) if base.startswith("[") else Type(base)

    @property
    def is_list(self) -> bool:
        return self.text.removesuffix("!").startswith("[")

    @property
    def named(self) -> str:
        return self.text.replace("[", "").replace("]", "").replace("!", "")


Resolver = Callable[[Any, Any, dict[str, Any]], Any]


@dataclass
class FieldDef:
    type: Type
    resolve: Resolver
    args: dict[str, Type] = field(default_factory=dict)
    access: tuple[str, str] | None = None  # (scope, kind) of the @access directive
    sees_selection: bool = False
    """The resolver gets the names of the selected subfields as ``args["__selected"]`` (a resolver may
    do more work for some of them, as builds.sr.ht's log resolver does for ``last128KiB``)."""


@dataclass
class Schema:
    types: dict[str, dict[str, FieldDef]]
    enums: dict[str, tuple[str, ...]]
    may: Callable[[Any, str, str], bool]
    """``may(context, scope, kind)``: whether the caller holds the grant."""

    def field_def(self, type_name: str, f: Field) -> FieldDef:
        fields = self.types[type_name]
        if f.name not in fields:
            raise RequestError(
                f'Cannot query field "{f.name}" on type "{type_name}".', line=f.line, column=f.column
            )
        return fields[f.name]


def _type_of_value(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "[]interface {}"
    return "map[string]interface {}"


class _Run:
    def __init__(self, schema: Schema, op: Operation, variables: Mapping[str, Any], context: Any) -> None:
        self.schema = schema
        self.op = op
        self.context = context
        self.errors: list[dict[str, Any]] = []
        self.defined = {d.name: d for d in op.variables}
        self.used: set[str] = set()
        self.given = variables
        self.values: dict[str, Any] = {}

    # -- validation ---------------------------------------------------------------------------------------

    def coerce_variables(self, given: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, definition in self.defined.items():
            declared = Type(str(definition.type))
            if declared.named not in SCALARS and declared.named not in self.schema.enums:
                raise RequestError(f'Unknown type "{declared.named}".')
            if name in given and given[name] is not None:
                out[name] = self._coerce(given[name], declared, f"variable.{name}")
            elif name in given:
                if declared.required:
                    raise RequestError(f"input: variable.{name} cannot be null")
                out[name] = None
            elif definition.has_default:
                out[name] = definition.default
            elif declared.required:
                raise RequestError(f"input: variable.{name} must be defined")
        return out

    def _coerce(self, value: Any, declared: Type, path: str) -> Any:
        if value is None:
            if declared.required:
                raise RequestError(f"input: {path} cannot be null")
            return None
        if declared.is_list:
            items = value if isinstance(value, list) else [value]
            return [self._coerce(v, declared.inner, f"{path}[{i}]") for i, v in enumerate(items)]
        name = declared.named
        ok = {
            "Int": isinstance(value, int) and not isinstance(value, bool),
            "Float": isinstance(value, int | float) and not isinstance(value, bool),
            "Boolean": isinstance(value, bool),
        }.get(name, isinstance(value, str))
        if not ok:
            raise RequestError(f"input: {path} cannot use {_type_of_value(value)} as {name}")
        if name in self.schema.enums and value not in self.schema.enums[name]:
            raise RequestError(f"input: {path} {value} is not a valid {name}")
        return value

    def _arguments(self, parent: str, f: Field, definition: FieldDef) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, raw in f.arguments.items():
            if name not in definition.args:
                raise RequestError(
                    f'Unknown argument "{name}" on field "{parent}.{f.name}".', line=f.line, column=f.column
                )
            out[name] = self._literal(raw, definition.args[name], f)
        for name, arg_type in definition.args.items():
            if arg_type.required and name not in f.arguments:
                raise RequestError(
                    f'Field "{f.name}" argument "{name}" of type "{arg_type.text}" is required, but it was not provided.',
                    line=f.line,
                    column=f.column,
                )
        return out

    def _literal(self, raw: Any, expected: Type, f: Field) -> Any:
        if isinstance(raw, Variable):
            if raw.name not in self.defined:
                raise RequestError(f'Variable "${raw.name}" is not defined.', line=f.line, column=f.column)
            self.used.add(raw.name)
            declared = Type(str(self.defined[raw.name].type))
            if declared.named != expected.named or declared.is_list != expected.is_list:
                raise RequestError(
                    f'Variable "${raw.name}" of type "{declared.text}" used in position expecting type "{expected.text}".',
                    line=f.line,
                    column=f.column,
                )
            if expected.required and not declared.required and not self.defined[raw.name].has_default:
                raise RequestError(
                    f'Variable "${raw.name}" of type "{declared.text}" used in position expecting type "{expected.text}".',
                    line=f.line,
                    column=f.column,
                )
            return self.values.get(raw.name)
        if raw is None:
            if expected.required:
                raise RequestError(
                    f'Expected type "{expected.text}", found null.', line=f.line, column=f.column
                )
            return None
        if expected.is_list:
            items = raw if isinstance(raw, list) else [raw]
            return [self._literal(item, expected.inner, f) for item in items]
        name = expected.named
        if name in self.schema.enums:
            if not isinstance(raw, EnumValue) or raw.name not in self.schema.enums[name]:
                raise RequestError(f'Expected type "{name}", found {raw!r}.', line=f.line, column=f.column)
            return raw.name
        ok = {
            "Int": isinstance(raw, int) and not isinstance(raw, bool),
            "Float": isinstance(raw, int | float) and not isinstance(raw, bool),
            "Boolean": isinstance(raw, bool),
        }.get(name, isinstance(raw, str))
        if not ok:
            shown = raw.name if isinstance(raw, EnumValue) else repr(raw)
            raise RequestError(
                f'Expected type "{expected.text}", found {shown}.', line=f.line, column=f.column
            )
        return raw

    def check(self, type_name: str, selections: list[Field]) -> int:
        """Validate a selection set; its complexity (gqlgen's default: one per field, nested summed)."""
        total = 0
        for f in selections:
            if f.name == "__typename":
                if f.selections or f.arguments:
                    raise RequestError(
                        'Field "__typename" must not have a selection.', line=f.line, column=f.column
                    )
                continue
            definition = self.schema.field_def(type_name, f)
            self._arguments(type_name, f, definition)
            named = definition.type.named
            if named in self.schema.types:
                if not f.selections:
                    raise RequestError(
                        f'Field "{f.name}" of type "{definition.type.text}" must have a selection of subfields.'
                        f' Did you mean "{f.name} {{ ... }}"?',
                        line=f.line,
                        column=f.column,
                    )
                total += 1 + self.check(named, f.selections)
            else:
                if f.selections:
                    raise RequestError(
                        f'Field "{f.name}" must not have a selection since type "{definition.type.text}" has no subfields.',
                        line=f.line,
                        column=f.column,
                    )
                total += 1
        return total

    # -- execution ----------------------------------------------------------------------------------------

    def select(
        self, type_name: str, obj: Any, selections: list[Field], path: list[str | int]
    ) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        for f in selections:
            if f.name == "__typename":
                out[f.key] = type_name
                continue
            definition = self.schema.types[type_name][f.name]
            here = [*path, f.key]
            try:
                if definition.access is not None and not self.schema.may(self.context, *definition.access):
                    raise FieldError("Access denied for invalid auth method")
                args = self._arguments(type_name, f, definition)
                if definition.sees_selection:
                    args["__selected"] = frozenset(sub.name for sub in f.selections)
                value = definition.resolve(self.context, obj, args)
                completed = self.complete(definition.type, value, f, here)
            except FieldError as exc:
                self.errors.append({"message": str(exc), "path": here})
                completed = None
            if completed is None and definition.type.required:
                return None
            out[f.key] = completed
        return out

    def complete(self, declared: Type, value: Any, f: Field, path: list[str | int]) -> Any:
        if value is None:
            return None
        if declared.is_list:
            items = []
            for i, item in enumerate(value):
                done = self.complete(declared.inner, item, f, [*path, i])
                if done is None and declared.inner.required:
                    return None
                items.append(done)
            return items
        named = declared.named
        if named in self.schema.types:
            return self.select(named, value, f.selections, path)
        return value


def run(
    schema: Schema,
    query: str,
    variables: Mapping[str, Any] | None,
    operation_name: str | None,
    context: Any,
    *,
    max_complexity: int,
    pick: Callable[[Operation], None] | None = None,
) -> dict[str, Any]:
    """The JSON answer to one request; ``RequestError`` when gqlgen would answer 422.

    ``pick`` sees the chosen operation before it runs (the fake's fault injection and records).
    """
    try:
        operations = parse(query)
    except GqlSyntaxError as exc:
        raise RequestError(exc.message, "GRAPHQL_PARSE_FAILED", exc.line, exc.column) from None
    if operation_name:
        chosen = [op for op in operations if op.name == operation_name]
        if not chosen:
            raise RequestError(f"operation {operation_name} not found")
        op = chosen[0]
    elif len(operations) == 1:
        op = operations[0]
    else:
        raise RequestError("operation name is required when the document holds several operations")
    root = {"query": "Query", "mutation": "Mutation"}.get(op.kind)
    if root is None:
        raise RequestError(f'Schema does not support operation type "{op.kind}"')
    state = _Run(schema, op, variables or {}, context)
    complexity = state.check(root, op.selections)
    unused = sorted(set(state.defined) - state.used)
    if unused:
        raise RequestError(f'Variable "${unused[0]}" is never used.')
    state.values = state.coerce_variables(state.given)
    if complexity > max_complexity:
        raise RequestError(
            f"operation has complexity {complexity}, which exceeds the limit of {max_complexity}",
            "COMPLEXITY_LIMIT_EXCEEDED",
        )
    if pick is not None:
        pick(op)
    data = state.select(root, None, op.selections, [])
    answer: dict[str, Any] = {}
    if state.errors:
        answer["errors"] = state.errors
    answer["data"] = data
    return answer


def root_fields(op: Operation) -> list[str]:
    """The top-level field names of an operation (``submit``, ``job``...)."""
    return [f.name for f in op.selections]
