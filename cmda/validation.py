"""Declarative validation for YAML-backed settings (trainer configs, sweep files) with pydantic v2.

Both the trainer config and the sweep file are pydantic models built on `StrictModel` (unknown keys are
errors, values are not silently coerced from the wrong type). `validate(Model, data, source, Error)` turns
pydantic's errors into one message per problem that names the file, the dotted field and what was expected:

    configs/demo.yaml: field 'optim.lr': must be a number > 0, got -1.0

so a typo costs a second before anything starts instead of a failed trial hours in.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

M = TypeVar("M", bound=BaseModel)

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
"""A float that is not NaN or inf (YAML reads `.nan` and `.inf` as numbers)."""
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
NonNegativeFloat = Annotated[FiniteFloat, Field(ge=0)]
Probability = Annotated[FiniteFloat, Field(ge=0, le=1)]
WidthHeight = Annotated[list[PositiveInt], Field(min_length=2, max_length=2)]
"""[width, height] in pixels, as the configs write image sizes."""


class StrictModel(BaseModel):
    """Base of every settings model: unknown keys are errors, and values are taken strictly (a string is
    not a number, `true` is not 1.0; ints are accepted for floats, and a whole float such as 1e3 for an
    int: YAML and `--set` read `1e3` as 1000.0, which is a whole number). YAML gives lists, so sequence
    fields are typed `list[...]`, not tuples."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _whole_numbers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fields = _int_fields(cls)
        if not any(name in data for name in fields):
            return data
        data = dict(data)
        for name, kind in fields.items():
            if name in data:
                value = data[name]
                data[name] = [whole_number(v) for v in value] if kind == "list" and isinstance(
                    value, list) else whole_number(value)
        return data


def whole_number(value: Any) -> Any:
    """1000.0 -> 1000; anything else unchanged (2.5 stays a float and is refused as an integer)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _int_kind(annotation: Any) -> str | None:
    """"int" for an int field (Annotated, optional), "list" for a list of ints, else None."""
    if annotation is int:
        return "int"
    origin = get_origin(annotation)
    if origin is Annotated:
        return _int_kind(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        kinds = {_int_kind(arg) for arg in get_args(annotation) if arg is not type(None)}
        return kinds.pop() if len(kinds) == 1 else None
    if origin is list:
        return "list" if _int_kind(get_args(annotation)[0]) == "int" else None
    return None


@functools.cache
def _int_fields(model: type[BaseModel]) -> dict[str, str]:
    return {name: kind for name, info in model.model_fields.items() if (kind := _int_kind(info.annotation))}


def dotted(location: tuple[Any, ...]) -> str:
    """pydantic's error location ('uda', 'feature_loss', 'lambdas', 'x') -> 'uda.feature_loss.lambdas.x'.

    List indices become [i]; pydantic's internal tags for union members (e.g. 'function-after[...]',
    'float', 'int') are dropped, since they name no field a user wrote.
    """
    out = ""
    for part in location:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and ("[" in part or part in _TYPE_TAGS or part in _UNION_TAGS):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "<top level>"


_TYPE_TAGS = {"float", "int", "str", "bool", "list", "dict", "none", "literal", "tagged-union"}
_UNION_TAGS: set[str] = set()


def register_union_tags(tags: Any) -> None:
    """Names of the members of a discriminated union (pydantic puts the member's tag into the error
    location: 'data.target.dark_zurich.crop'); they are dropped from the dotted field names users see."""
    _UNION_TAGS.update(str(tag) for tag in tags)


def describe(error: dict[str, Any]) -> str:
    """One pydantic error -> "field 'a.b': <what was expected>, got <value>"."""
    field = dotted(error.get("loc", ()))
    kind = error.get("type", "")
    message = str(error.get("msg", "invalid value"))
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if kind == "extra_forbidden":
        return f"field '{field}': unknown key (check the spelling; see docs/ARCHITECTURE.md for valid keys)"
    if kind == "missing":
        return f"field '{field}': required but missing"
    value = error.get("input")
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"field '{field}': {message[0].lower() + message[1:] if message else message}, got {shown}"


def field_error(source: str, field: str, message: str, value: Any = ...) -> str:
    """One problem that pydantic's own checks cannot see (it spans two fields, or needs a registry), in
    the same format as `describe`: "FILE: field 'a.b': <message>, got <value>"."""
    shown = "" if value is ... else f", got {value!r}"
    return f"{source}: field '{field}': {message}{shown}"


Origin = Callable[[str], "str | None"]
"""Dotted field -> where its value came from when not the file (e.g. "--set train.foo=3"), else None."""


def format_errors(error: ValidationError, source: str, origin_of: Origin | None = None) -> str:
    """All problems of one validation, one line each, every line starting with where the value came from:
    the source file, or what `origin_of` names for that field (a `--set` option)."""
    lines = []
    seen = set()
    for item in error.errors(include_url=False):
        where = (origin_of(dotted(item.get("loc", ()))) if origin_of else None) or source
        line = f"{where}: {describe(item)}"
        if line not in seen:
            seen.add(line)
            lines.append(line)
    return "\n".join(lines)


def validate(model: type[M], data: Any, source: str, error_class: type[Exception] = ValueError,
             origin_of: Origin | None = None) -> M:
    """Build `model` from plain data, or raise `error_class` with every problem named (see module doc)."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise error_class(format_errors(error, source, origin_of)) from None


def crop_in_resize(crop: list[int], resize: list[int] | None, section: str, dataset: str) -> list[int]:
    """Validator body for a [W, H] crop taken from images first resized to `resize` (data.<section>)."""
    if resize is not None and not fits(crop, resize):
        raise ValueError(
            f"must fit in data.{section}.resize {resize} ({dataset} images are resized first, then "
            f"cropped): make data.{section}.crop at most data.{section}.resize"
        )
    return crop


def fits(inner: list[int], outer: list[int]) -> bool:
    """A [W, H] box fits in another one."""
    return inner[0] <= outer[0] and inner[1] <= outer[1]
