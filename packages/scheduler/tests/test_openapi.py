"""/openapi.json: a valid OpenAPI 3.1 document that describes exactly the routes served."""

from __future__ import annotations

import re

import falcon.inspect
import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from taskmill.scheduler import openapi
from taskmill.scheduler.auth import PUBLIC_PATHS

_CONVERTER = re.compile(r"\{(\w+):[^}]+\}")


def _served(app) -> set[tuple[str, str]]:
    """(path, method) of every responder the app's router holds (not Falcon's defaults)."""
    served = set()
    for route in falcon.inspect.inspect_routes(app):
        path = _CONVERTER.sub(r"{\1}", route.path)  # {task_id:uuid} is {task_id} in OpenAPI
        served.update((path, m.method) for m in route.methods if not m.internal)
    return served


def _described(document: dict) -> set[tuple[str, str]]:
    return {
        (path, method.upper())
        for path, operations in document["paths"].items()
        for method in operations
    }


def test_the_served_document_is_valid_openapi_3_1(offline_api) -> None:
    result = offline_api.get("/openapi.json")

    assert result.status_code == 200
    assert result.json["openapi"].startswith("3.1")
    validate(result.json)  # raises on any error


def test_the_document_describes_exactly_the_routes_served(offline_api) -> None:
    document = offline_api.get("/openapi.json").json

    assert _described(document) == _served(offline_api.client.app)


def test_the_comparison_notices_an_undocumented_route(offline_api) -> None:
    # The check above must be able to fail: a route added without documentation is caught.
    class Extra:
        def on_get(self, req, resp) -> None:
            pass

    offline_api.client.app.add_route("/v1/extra", Extra())

    assert ("/v1/extra", "GET") in _served(offline_api.client.app) - _described(
        offline_api.get("/openapi.json").json
    )


def test_the_validator_rejects_a_broken_document() -> None:
    broken = openapi.document("0")
    broken["paths"]["/v1/tasks"]["post"]["responses"] = "none"

    with pytest.raises(OpenAPIValidationError):
        validate(broken)


def test_every_operation_has_a_unique_id_and_only_the_probes_are_public() -> None:
    document = openapi.document("1.0")
    operations = [op for ops in document["paths"].values() for op in ops.values()]

    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids))
    public = {
        path for path, ops in document["paths"].items() if ops.get("get", {}).get("security") == []
    }
    assert public == PUBLIC_PATHS
