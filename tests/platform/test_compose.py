"""compose.yaml, read as data (no Docker engine runs here): the services, their commands, health
checks and start order, and settings the service actually reads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from quoteapi.database.url import parse_database_url
from quoteapi.dev.databases import app_role_statements
from quoteapi.settings import Settings

# `${VAR:?message}` / `${VAR:-default}` / `${VAR}`, as compose interpolates them.
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?][^}]*)?\}")


@pytest.fixture(scope="module")
def compose(repo_root: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((repo_root / "compose.yaml").read_text())
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    services: dict[str, Any] = compose["services"]
    return services


def _interpolated(value: str) -> str:
    return _VARIABLE.sub(lambda m: f"x{m.group(1).lower()}", value)


def _database_url(service: dict[str, Any]) -> dict[str, Any]:
    return parse_database_url(_interpolated(service["environment"]["DATABASE_URL"])).connect_kwargs


def _depends(service: dict[str, Any]) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in service.get("depends_on", {}).items()}


def test_services_are_database_pooler_migration_grants_and_api(services: dict[str, Any]) -> None:
    assert set(services) == {"db", "pgbouncer", "migrate", "grants", "api"}


def test_pgbouncer_pools_by_transaction_in_front_of_the_database(
    services: dict[str, Any],
) -> None:
    env = services["pgbouncer"]["environment"]
    assert env["POOL_MODE"] == "transaction"
    assert env["DB_HOST"] == "db"


def test_migrate_runs_once_as_the_owner_over_the_direct_connection(
    services: dict[str, Any],
) -> None:
    migrate = services["migrate"]
    assert migrate["command"] == ["quoteapi", "migrate"]
    assert migrate["restart"] == "no"
    target = _database_url(migrate)
    assert (target["host"], target["user"]) == (
        "db",
        services["db"]["environment"]["POSTGRES_USER"],
    )


def test_api_serves_through_the_pooler_as_the_least_privileged_role(
    services: dict[str, Any],
) -> None:
    api = services["api"]
    assert api["command"][:2] == ["quoteapi", "serve"]
    assert api["command"][api["command"].index("--host") + 1] == "0.0.0.0"
    target = _database_url(api)
    assert target["host"] == "pgbouncer"
    assert target["user"] == services["pgbouncer"]["environment"]["DB_USER"] == "quoteapi_app"
    assert target["user"] != services["db"]["environment"]["POSTGRES_USER"]
    assert api["environment"]["DATABASE_TRANSACTION_POOLER"] == "true"


def test_api_environment_names_only_settings_the_service_reads(services: dict[str, Any]) -> None:
    known = {name.upper() for name in Settings.model_fields} | {"PGPASSWORD"}  # the driver's
    unknown = set(services["api"]["environment"]) - known
    assert unknown == set()


def test_the_app_role_gets_exactly_the_privileges_the_service_needs(repo_root: Path) -> None:
    text = (repo_root / "compose.yaml").read_text()
    statements = [s.replace('"', "") for s in app_role_statements("quoteapi_app", "x", "quoteapi")]
    create, *grants = statements  # the same SQL as the tests' role (quoteapi.dev.databases)
    assert create.split(" PASSWORD ")[0] in text
    lines = (line.strip(" -;") for line in text.splitlines())
    in_compose = [line for line in lines if line.startswith(("GRANT ", "REVOKE "))]
    assert sorted(in_compose) == sorted(grants)


def test_every_long_running_service_has_a_health_check(services: dict[str, Any]) -> None:
    assert "pg_isready" in services["db"]["healthcheck"]["test"]
    assert "pg_isready" in services["pgbouncer"]["healthcheck"]["test"]
    api_check = " ".join(services["api"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/readyz" in api_check


def test_start_order_database_then_migration_and_grants_then_pooler_then_api(
    services: dict[str, Any],
) -> None:
    assert _depends(services["migrate"]) == {"db": "service_healthy"}
    assert _depends(services["grants"]) == {"migrate": "service_completed_successfully"}
    assert _depends(services["pgbouncer"]) == {"db": "service_healthy"}
    assert _depends(services["api"]) == {
        "grants": "service_completed_successfully",
        "pgbouncer": "service_healthy",
    }
    # Each condition names a service that can meet it: healthy ones have a health check,
    # completed ones run once.
    for service in services.values():
        for name, condition in _depends(service).items():
            if condition == "service_healthy":
                assert "healthcheck" in services[name], name
            else:
                assert services[name].get("restart") == "no", name


def test_secrets_are_required_not_defaulted(services: dict[str, Any]) -> None:
    for service in services.values():
        for name, value in service.get("environment", {}).items():
            if "PASSWORD" in name:
                variables = re.findall(r"\$\{[A-Z_]+(:?.)", str(value))
                assert variables, (name, value)
                assert all(v.endswith("?") for v in variables), (name, value)


def test_no_password_is_put_into_a_url_where_it_would_need_encoding(
    services: dict[str, Any],
) -> None:
    for service in services.values():
        url = service.get("environment", {}).get("DATABASE_URL")
        if url is not None:
            assert "${" not in url, url  # compose cannot percent-encode what it interpolates
            assert "PGPASSWORD" in service["environment"]


def test_images_are_built_from_this_repository(repo_root: Path, services: dict[str, Any]) -> None:
    assert services["api"]["build"] == services["migrate"]["build"] == "."
    assert (repo_root / "Dockerfile").is_file()
