"""One shape for every error a service answers: RFC 9457 problem details
(`application/problem+json`) with the fields at fault and why.

    {"type": "about:blank", "title": "Unprocessable Content", "status": 422,
     "detail": "client.age: Input should be less than or equal to 120",
     "errors": [{"field": "client.age", "reason": "Input should be less than or equal to 120"}]}

The reasons are the server's words, never the caller's input echoed back: a body may hold
personal data, and an error travels to logs and proxies that must not see it."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse

PROBLEM_MEDIA_TYPE = "application/problem+json"
_SUMMARY_ITEMS = 3
_SUMMARY_CHARS = 500


class FieldError(BaseModel):
    """A field at fault (dotted path, `(body)` for the whole body) and why; some carry more
    facts of the server's, e.g. the referral an external_ref already belongs to."""

    model_config = ConfigDict(extra="allow")
    field: str
    reason: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(default="about:blank", description="a URI naming the kind of problem")
    title: str = Field(description="the HTTP status's phrase")
    status: int = Field(description="the HTTP status code")
    detail: str = Field(description="what went wrong, for a person")
    errors: list[FieldError] = Field(default_factory=list, description="each field at fault and why")


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


def title_of(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def summary(errors: list[FieldError]) -> str:
    parts = [f"{e.field}: {e.reason}" for e in errors[:_SUMMARY_ITEMS]]
    if len(errors) > _SUMMARY_ITEMS:
        parts.append(f"and {len(errors) - _SUMMARY_ITEMS} more")
    text = "; ".join(parts)
    return text if len(text) <= _SUMMARY_CHARS else text[: _SUMMARY_CHARS - 1] + "…"


def _field_error(item: Any) -> FieldError:
    if isinstance(item, FieldError):
        return item
    if isinstance(item, dict):
        extra = {k: v for k, v in item.items() if k not in ("field", "reason")}
        return FieldError(field=str(item.get("field") or "(request)"), reason=str(item.get("reason") or ""),
                          **extra)
    return FieldError(field="(request)", reason=str(item))


def problem(status: int, detail: Any = None, headers: Mapping[str, str] | None = None) -> ProblemResponse:
    """A problem response. `detail` is what an HTTPException carries: a sentence, one
    {field, reason} or a list of them."""
    errors: list[FieldError] = []
    if isinstance(detail, dict | FieldError):
        errors = [_field_error(detail)]
    elif isinstance(detail, list | tuple):
        errors = [_field_error(d) for d in detail]
    if errors:
        text = summary(errors)
    elif isinstance(detail, str) and detail:
        text = detail
    else:
        text = title_of(status)
    body = Problem(title=title_of(status), status=status, detail=text, errors=errors)
    return ProblemResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def _documented(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}


# For `include_router(..., responses=ERROR_RESPONSES)`: every error a route may answer, in
# the OpenAPI (the Problem schema is added to its components by shared.http).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _documented("The request is malformed"),
    401: _documented("No credential, or not a valid one"),
    403: _documented("The credential may not do this"),
    404: _documented("No such resource (for this caller)"),
    409: _documented("Conflicts with the resource's current state"),
    413: _documented("The body is larger than this endpoint accepts"),
    415: _documented("The body's media type is not one this endpoint accepts"),
    422: _documented("A field is invalid: each one named, with the reason"),
    429: _documented("Too many failed authentications: retry after Retry-After seconds"),
    503: _documented("A dependency is unavailable: retry after Retry-After seconds"),
}


def openapi_components() -> dict[str, Any]:
    """The schemas ERROR_RESPONSES refers to, for the OpenAPI's components."""
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {**defs, "Problem": schema}
