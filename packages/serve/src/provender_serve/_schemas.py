"""The OpenAI request bodies the server accepts, validated strictly, and its OpenAI-shaped errors.

Unknown fields, wrong types and out-of-range values are 400s that name the field. Fields
OpenAI defines but a local model cannot honour (``n > 1``, penalties, ``logit_bias``) are
refused with a clear message rather than silently ignored. ``response_format`` and
``tool_choice`` become a `provender.generation.Constraint` (`_structured`); ``logprobs``
and ``top_logprobs`` (at most 20) are passed on. ``keep_alive`` (Ollama's per-request idle
time) and ``system_prompt`` (for completions) are provender's additions.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from provender_serve.errors import APIError

#: Largest ``max_tokens`` a request may ask for (``provender serve --max-tokens-limit``).
DEFAULT_MAX_TOKENS_LIMIT = 32768


#: Most alternatives per token ``top_logprobs`` (chat) or ``logprobs`` (completions) may ask for.
MAX_TOP_LOGPROBS = 20


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class FunctionCall(_Strict):
    name: str
    arguments: str


class ToolCallIn(_Strict):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None

    def to_provider(self) -> dict[str, Any]:
        """The OpenAI-shaped dict providers take: content as one string, system for developer."""
        content = self.content
        if isinstance(content, list):
            content = "".join(part.text for part in content)
        out: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role, "content": content or ""}
        if self.name is not None:
            out["name"] = self.name
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.tool_calls:
            out["tool_calls"] = [call.model_dump() for call in self.tool_calls]
        return out


class FunctionDef(_Strict):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(_Strict):
    type: Literal["function"]
    function: FunctionDef


class StreamOptions(_Strict):
    include_usage: bool = False
    include_obfuscation: bool | None = None


class JSONSchemaFormat(_Strict):
    name: str | None = Field(None, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Strict):
    """``{"type": "text"}``, ``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema": {...}}``."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


KeepAlive = float | str | None


class _Generation(_Strict):
    model: str = Field(min_length=1, max_length=1024)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stop: str | Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=16)] | None = None
    n: int | None = Field(None, ge=1, le=1)
    user: str | None = None
    frequency_penalty: float | None = Field(None, ge=0, le=0)
    presence_penalty: float | None = Field(None, ge=0, le=0)
    logit_bias: dict[str, float] | None = Field(None, max_length=0)
    keep_alive: KeepAlive = None

    @field_validator("max_tokens")
    @classmethod
    def _positive(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError("must be an integer >= 1")
        return value

    def options(self) -> dict[str, Any]:
        """The provider options this request sets (max_tokens, temperature, top_p, seed, stop)."""
        values = {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": self.stop or None,
        }
        return {k: v for k, v in values.items() if v is not None}


class ChatRequest(_Generation):
    messages: list[Message] = Field(min_length=1)
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: ResponseFormat | None = None

    def options(self) -> dict[str, Any]:
        out = super().options()
        if self.max_completion_tokens is not None and "max_tokens" not in out:
            if self.max_completion_tokens < 1:
                raise APIError(400, "max_completion_tokens: must be an integer >= 1", "invalid_value")
            out["max_tokens"] = self.max_completion_tokens
        if self.top_logprobs and not self.logprobs:
            raise APIError(400, "top_logprobs: needs logprobs set to true", "invalid_value", "top_logprobs")
        if self.logprobs:
            out["logprobs"] = True
            if self.top_logprobs:
                out["top_logprobs"] = self.top_logprobs
        return out

    def tool_dicts(self) -> list[dict[str, Any]] | None:
        if not self.tools or self.tool_choice == "none":
            return None
        return [tool.model_dump(exclude_none=True) for tool in self.tools]


class CompletionRequest(_Generation):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    echo: Literal[False] | None = None
    suffix: None = None
    best_of: int | None = Field(None, ge=1, le=1)
    #: OpenAI's legacy field: how many alternatives per token (0: the chosen token's only)
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    system_prompt: str | None = None

    def options(self) -> dict[str, Any]:
        out = super().options()
        if self.logprobs is not None:
            out["logprobs"] = True
            if self.logprobs:
                out["top_logprobs"] = self.logprobs
        return out

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class EmbeddingRequest(_Strict):
    model: str = Field(min_length=1, max_length=1024)
    input: str | Annotated[list[str], Field(min_length=1, max_length=4096)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: None = None
    user: str | None = None
    keep_alive: KeepAlive = None

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class UnloadRequest(_Strict):
    model: str | None = None


def check_text(data: Any) -> None:
    """Refuse (400) a decoded body holding a string that is not Unicode text: JSON allows a lone
    surrogate escape (``"\\ud800"``), which no model, tokenizer or UTF-8 answer can take."""
    stack: list[tuple[Any, str]] = [(data, "body")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            strings = [value]
        elif isinstance(value, dict):
            strings = [k for k in value if isinstance(k, str)]
            stack.extend((v, f"{where}.{k}" if where != "body" else str(k)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{where}.{i}" if where != "body" else str(i)) for i, v in enumerate(value))
            continue
        else:
            continue
        for text in strings:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                bad = text[exc.start]
                raise APIError(
                    400,
                    f"{where}: the string holds a lone surrogate ({ascii(bad)[1:-1]}), which is not Unicode text",
                    "invalid_text",
                    where,
                ) from None


def parse(model: type[_Strict], data: Any, *, max_tokens_limit: int = DEFAULT_MAX_TOKENS_LIMIT) -> Any:
    """Validate a decoded JSON body against `model`; raises a 400 `APIError` naming the field."""
    if not isinstance(data, dict):
        raise APIError(400, f"the request body must be a JSON object, not {type(data).__name__}", "invalid_body")
    try:
        request = model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"]) or "body"
        kind = err["type"]
        code = (
            "unknown_field" if kind == "extra_forbidden" else "missing_field" if kind == "missing" else "invalid_type"
        )
        message = f"unknown field {where!r}" if code == "unknown_field" else f"{where}: {err['msg']}"
        raise APIError(400, message, code, where) from None
    limit = getattr(request, "max_tokens", None) or getattr(request, "max_completion_tokens", None)
    if limit is not None and limit > max_tokens_limit:
        raise APIError(
            400, f"max_tokens: {limit} is more than this server allows ({max_tokens_limit})", "invalid_value"
        )
    return request


def parse_keep_alive(value: KeepAlive) -> float | None:
    """Ollama's keep_alive: seconds, or a duration string ("5m", "1h"), at most ten years; negative or
    "forever" = forever (-1); None = the server's default. Anything else is a 400 naming keep_alive."""
    if value is None:
        return None
    from provender._sizes import parse_duration

    try:
        return float(parse_duration(value))
    except ValueError as exc:
        raise APIError(400, f"keep_alive: {exc}", "invalid_value", "keep_alive") from None
