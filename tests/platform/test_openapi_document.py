"""/openapi.json as validators, linters and client generators read it: valid OpenAPI 3.1 with
no lint errors, optional headers as plain strings, probes without security, a server entry, a
license, and the headers every response always carries marked required."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from quoteapi.app import create_app
from tests.support.app import NO_DATABASE_URL, make_settings

REDOCLY = Path(__file__).parent / "redocly"
WEBHOOK_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # so the webhook route is there


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    settings = make_settings(NO_DATABASE_URL, clerk_webhook_signing_secret=WEBHOOK_SECRET)
    return create_app(settings).openapi()


def test_the_document_passes_openapi_spec_validator(document: dict[str, Any]) -> None:
    validate(document)


def test_the_document_passes_redocly_lint_with_no_errors(
    document: dict[str, Any], tmp_path: Path
) -> None:
    node = shutil.which("node")
    redocly = REDOCLY / "node_modules" / ".bin" / "redocly"
    if node is None or not redocly.exists():
        reason = f"node and {REDOCLY}/node_modules are needed (cd {REDOCLY} && npm ci)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; .ci/run installs them")
        pytest.skip(reason)
    path = tmp_path / "openapi.json"
    path.write_text(json.dumps(document))
    result = subprocess.run(
        [str(redocly), "lint", str(path), "--format=summary"],
        env={**os.environ, "REDOCLY_TELEMETRY": "off", "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_conditional_headers_are_optional_plain_strings(
    document: dict[str, Any], method: str
) -> None:
    parameters = document["paths"]["/me/message"][method]["parameters"]
    for parameter in parameters:
        assert parameter["name"] in ("if-match", "if-none-match")
        assert parameter["required"] is False
        assert parameter["schema"]["type"] == "string"
        assert "anyOf" not in parameter["schema"]


@pytest.mark.parametrize(
    ("path", "method"), [("/healthz", "get"), ("/readyz", "get"), ("/webhooks/clerk", "post")]
)
def test_operations_without_a_token_say_so(
    document: dict[str, Any], path: str, method: str
) -> None:
    assert document["paths"][path][method]["security"] == []


def test_the_document_names_a_server_and_the_projects_license(
    document: dict[str, Any], repo_root: Path
) -> None:
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    assert document["servers"] == [{"url": "/"}]
    assert document["info"]["license"]["identifier"] == project["license"] == "MIT"


@pytest.mark.parametrize(
    ("method", "status", "header"),
    [
        ("get", "200", "ETag"),
        ("get", "304", "ETag"),
        ("put", "200", "ETag"),
        ("put", "201", "ETag"),
        ("put", "201", "Location"),
    ],
)
def test_headers_that_always_come_are_documented_as_required(
    document: dict[str, Any], method: str, status: str, header: str
) -> None:
    response = document["paths"]["/me/message"][method]["responses"][status]
    assert response["headers"][header]["required"] is True
    assert response["headers"][header]["schema"] == {"type": "string"}
