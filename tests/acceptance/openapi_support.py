"""Answers checked against the OpenAPI document with schemathesis's conformance checks."""

from __future__ import annotations

from typing import Any

import httpx
import schemathesis
from schemathesis.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

# The status is one the document gives the route, and the content type, the headers it
# requires and the body are the ones it gives for that status.
CONFORMANCE = [status_code_conformance, content_type_conformance,
               response_headers_conformance, response_schema_conformance]
Route = tuple[str, str, int]  # method, path template, status


def documented_statuses(document: dict[str, Any]) -> set[Route]:
    return {
        (method.upper(), path, int(code))
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        for code in operation["responses"]
    }


class Conformance:
    """Checks answers against one document and keeps which route answered which status."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.schema = schemathesis.openapi.from_dict(document)
        self.seen: set[Route] = set()

    def check(self, method: str, template: str, response: httpx.Response,
              status: int, **path_parameters: str) -> None:
        assert response.status_code == status, (method, template, response.text[:500])
        operation = self.schema[template][method]
        case = operation.Case(path_parameters=path_parameters)
        case.validate_response(response, checks=CONFORMANCE)
        self.seen.add((method, template, status))
