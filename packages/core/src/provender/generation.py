"""The typed generation contract: what a caller may ask of a provider's generation.

Imports pydantic, so neither ``import provender`` nor ``provender --help`` loads this module.

`Constraint` says what shape the generated text must have (a JSON schema, any JSON object, a regular
expression, one of a few strings, or a grammar in llguidance's Lark dialect); `provender._constrain`
compiles it against a model's tokenizer and masks the model's logits to it.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from provender.errors import InvalidOptionError

__all__ = ["Constraint"]

ConstraintKind = Literal["json_schema", "json_object", "regex", "choice", "grammar"]


class Constraint(BaseModel):
    """The shape generated text must take; ``value`` depends on ``kind``.

    - ``json_schema``: a JSON Schema (dict); the text is one JSON value that fits it
    - ``json_object``: ``None``; the text is any JSON object
    - ``regex``: a regular expression (str) the whole text matches
    - ``choice``: a non-empty list of non-empty strings; the text is exactly one of them
    - ``grammar``: a grammar in llguidance's Lark dialect (str)

    Build one with the helpers: ``Constraint.json_schema(schema_or_model_class)``,
    ``Constraint.json_object()``, ``Constraint.regex(r"...")``, ``Constraint.choice([...])``,
    ``Constraint.grammar(text)``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ConstraintKind
    value: Any = None

    @model_validator(mode="after")
    def _check_value(self) -> Constraint:
        problem = _problem(self.kind, self.value)
        if problem is not None:
            raise ValueError(str(InvalidOptionError(problem[0], self.value, problem[1])))
        if self.kind == "choice":
            object.__setattr__(self, "value", list(self.value))
        return self

    def __hash__(self) -> int:
        return hash(self.key())

    @classmethod
    def _make(cls, kind: ConstraintKind, value: Any) -> Constraint:
        """Build one, raising `InvalidOptionError` (not pydantic's ValidationError) for a bad value."""
        problem = _problem(kind, value)
        if problem is not None:
            raise InvalidOptionError(problem[0], value, problem[1])
        return cls(kind=kind, value=value)

    # -- helpers ------------------------------------------------------------------------------

    @classmethod
    def json_schema(cls, schema: Any) -> Constraint:
        """A JSON value fitting ``schema``: a JSON Schema dict, or a pydantic model class.

        A model class's objects are closed (``additionalProperties: false`` where the model does
        not allow extras), as OpenAI's strict structured outputs are: the reply has the declared
        fields only, and a finite model has a finite reply.
        """
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            schema = _closed(schema.model_json_schema())
        return cls._make("json_schema", schema)

    @classmethod
    def json_object(cls) -> Constraint:
        """Any JSON object."""
        return cls._make("json_object", None)

    @classmethod
    def regex(cls, pattern: str) -> Constraint:
        """Text that the regular expression ``pattern`` matches in full."""
        return cls._make("regex", pattern)

    @classmethod
    def choice(cls, options: list[str] | tuple[str, ...]) -> Constraint:
        """Exactly one of ``options``."""
        return cls._make("choice", list(options) if isinstance(options, (list, tuple)) else options)

    @classmethod
    def grammar(cls, text: str) -> Constraint:
        """Text in the language of ``text``, a grammar in llguidance's Lark dialect."""
        return cls._make("grammar", text)

    def key(self) -> str:
        """Stable JSON naming this constraint (sorted keys): equal constraints have equal keys."""
        return json.dumps({"kind": self.kind, "value": self.value}, sort_keys=True, separators=(",", ":"))


def _closed(schema: Any) -> Any:
    """`schema` with ``additionalProperties: false`` on every object schema that does not say."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    named = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
    out = {
        k: {name: _closed(sub) for name, sub in v.items()} if k in named and isinstance(v, dict) else _closed(v)
        for k, v in schema.items()
    }
    if (out.get("type") == "object" or "properties" in out) and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _problem(kind: str, value: Any) -> tuple[str, str] | None:
    """``(option name, what a valid value is)`` when ``value`` is not one for ``kind``, else None."""
    if kind == "json_schema":
        if not isinstance(value, dict):
            return "schema", "a JSON Schema object (a dict) or a pydantic model class"
        try:
            json.dumps(value)
        except (TypeError, ValueError) as e:
            return "schema", f"a JSON-serialisable JSON Schema ({e})"
    elif kind == "json_object":
        if value is not None:
            return "json_object", "no value (None)"
    elif kind in ("regex", "grammar"):
        if not isinstance(value, str) or not value:
            return kind, f"a non-empty {kind} string"
    elif kind == "choice" and (
        not isinstance(value, (list, tuple)) or not value or not all(isinstance(c, str) and c for c in value)
    ):
        return "choice", "a non-empty list of non-empty strings"
    return None
