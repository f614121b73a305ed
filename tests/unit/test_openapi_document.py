"""The OpenAPI document: bearer auth where a token is needed, and signoff's own error shape
(never FastAPI's ``{"detail": ...}``). That answers match it is checked against a running
server (``tests/acceptance/test_openapi_answers.py``, ``tests/fuzz/test_openapi.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from signoff.app import create_app
from signoff.settings import Settings

OPEN = {("GET", "/healthz"), ("GET", "/metrics"), ("POST", "/api/v1/telegram/webhook"),
        ("POST", "/api/v1/slack/interactions")}


@pytest.fixture
def document(tmp_path: Path) -> dict[str, Any]:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/signoff.db"),
                     run_resolver=False)
    found: dict[str, Any] = app.openapi()
    return found


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(method.upper(), path): operation
            for path, item in document["paths"].items() for method, operation in item.items()}


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def test_routes_that_need_a_token_declare_bearer_auth(document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    found = operations(document)
    assert OPEN.issubset(found) and len(found) > len(OPEN)
    for key, operation in found.items():
        if key in OPEN:
            assert "security" not in operation, key
        else:
            assert operation["security"] == [{"bearer": []}], key
            assert "401" in operation["responses"], key


def test_every_refusal_has_signoffs_error_shape(document: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in json.dumps(document)
    assert "ValidationError" not in document["components"]["schemas"]
    for key, operation in operations(document).items():
        for code, response in operation["responses"].items():
            if int(code) < 400:
                continue
            schema = resolve(document, response["content"]["application/json"]["schema"])
            assert list(schema["properties"]) == ["error"], (key, code)
            error = resolve(document, schema["properties"]["error"])
            assert {"code", "message"} <= set(error["required"]), (key, code)
            if code == "409":
                assert "status" in error["required"], key
            if code == "422":
                assert "details" in error["properties"], key


def test_request_bodies_refer_to_the_documents_own_definitions(
    document: dict[str, Any]
) -> None:
    text = json.dumps(document)
    assert "#/$defs/" not in text and '"$defs"' not in text
    body = operations(document)[("POST", "/api/v1/approvals")]["requestBody"]
    risk = body["content"]["application/json"]["schema"]["properties"]["risk"]
    assert resolve(document, risk)["enum"] == ["low", "medium", "high", "critical"]
