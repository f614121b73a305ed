"""The OpenAPI document: what each route answers, how it refuses, and who may call it;
and the pages that show it.

Routes return plain dicts (``signoff.views``), serialized as they are: ``documented``
gives a route the keyword arguments that describe its answer with a model of
``signoff.answers`` for the document alone, so that no call pays for validating its
answer against that model. Every route that needs a bearer token says so (``security``),
and the document declares the scheme; the validation error FastAPI would describe
(``{"detail": ...}``) is not what signoff sends, so it is taken out of the document.

``/docs`` (Swagger UI) and ``/redoc`` load their scripts, styles and icon from signoff
itself (the copies the fastapi-offline package ships), never from a CDN: they work where
the internet cannot be reached.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, WithJsonSchema

from signoff.answers import ConflictError, Error, InvalidError

DOCS_ASSETS = "/static/docs"
BEARER_SCHEME = "bearer"
SECURITY_SCHEMES = {
    BEARER_SCHEME: {
        "type": "http",
        "scheme": "bearer",
        "description": "A token made by `signoff token create`; its name is the caller's "
                       "principal.",
    },
}

# An answer as the route returns it: serialized like ``dict[str, Any]``, whose schema in
# the document is the model given with the route's ``responses``.
Raw = Annotated[dict[str, Any], WithJsonSchema({})]
# The request bodies' own definitions (their enums) join the document's components.
_REF_TEMPLATE = "#/components/schemas/{model}"

_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again.",
                                "required": True, "schema": {"type": "string"}}}
_CHALLENGE = {"WWW-Authenticate": {"description": "`Bearer`", "required": True,
                                   "schema": {"type": "string"}}}
# Each refusal: its body, what it means, and the headers it always carries.
REFUSALS: dict[int, tuple[type[BaseModel], str, dict[str, Any]]] = {
    401: (Error, "No bearer token, another scheme, or a token that is not valid.",
          _CHALLENGE),
    403: (Error, "The token's role does not allow this.", {}),
    404: (Error, "Nothing has that id (an id that is not a UUID names nothing).", {}),
    409: (ConflictError, "The state has changed: `status` is the status that won.", {}),
    413: (Error, "The body is larger than 1 MiB.", {}),
    422: (InvalidError, "The input is not valid; `details` lists what failed its schema.",
          {}),
    503: (Error, "The database is unavailable; try again.", _RETRY_AFTER),
}


def documented(
    answer: type[BaseModel],
    *refusals: int,
    status: int = 200,
    said: str = "Successful Response",
    also: dict[int, tuple[type[BaseModel], str]] | None = None,
    notes: dict[int, str] | None = None,
    bearer: bool = True,
    body: type[BaseModel] | None = None,
    body_required: bool = True,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Keyword arguments of a route decorator that document it.

    ``answer`` is the shape of its ``status`` answer (``said`` describes it), ``also``
    other successful answers; ``refusals`` are the statuses it may refuse with
    (``notes`` tells a route's own reasons). ``body`` is the request body of a route that
    reads its body itself (``signoff.http.read_body``), so that FastAPI does not.
    """
    responses: dict[int | str, dict[str, Any]] = {
        status: {"model": answer, "description": said},
    }
    for code, (model, description) in (also or {}).items():
        responses[code] = {"model": model, "description": description}
    for code in refusals:
        model, description, headers = REFUSALS[code]
        responses[code] = {"model": model,
                           "description": (notes or {}).get(code, description)}
        if headers:
            responses[code]["headers"] = headers
    operation: dict[str, Any] = {**(extra or {})}
    if bearer:
        operation["security"] = [{BEARER_SCHEME: []}]
    if body is not None:
        operation["requestBody"] = {
            "required": body_required,
            "content": {"application/json": {
                "schema": body.model_json_schema(ref_template=_REF_TEMPLATE)}},
        }
    return {"response_model": Raw, "responses": responses, "openapi_extra": operation}


def install_openapi(app: FastAPI) -> None:
    """Serve the document with the bearer scheme and without FastAPI's own error shape."""
    build = app.openapi

    def document() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        doc = build()
        if fresh:
            _finish(doc)
        return doc

    app.openapi = document  # type: ignore[method-assign]


def _finish(doc: dict[str, Any]) -> None:
    components = doc.setdefault("components", {})
    components["securitySchemes"] = SECURITY_SCHEMES
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for path in doc.get("paths", {}).values():
        for operation in path.values():
            for content in operation.get("requestBody", {}).get("content", {}).values():
                for name, definition in content.get("schema", {}).pop("$defs", {}).items():
                    assert schemas.setdefault(name, definition) == definition, name
            responses = operation.get("responses", {})
            for code, response in list(responses.items()):
                for content in response.get("content", {}).values():
                    schema = content.get("schema", {})
                    if schema.get("$ref", "").endswith("/HTTPValidationError"):
                        # Added by FastAPI to a route whose parameters cannot fail (a path
                        # id is any string): that route never answers 422.
                        del responses[code]
                        break
                    if "$ref" in schema:  # FastAPI titles the answer beside its $ref
                        content["schema"] = {"$ref": schema["$ref"]}


def install_docs_pages(app: FastAPI) -> None:
    """``/docs`` and ``/redoc``, and their assets under ``DOCS_ASSETS``. Called once every
    other route is in place: a call to the API never tries these on its way."""
    assert app.openapi_url is not None
    document = app.openapi_url

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + document, title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=root + document, title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png", with_google_fonts=False,
        )

    assets = files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")
