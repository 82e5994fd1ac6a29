"""Fuzzing with schemathesis, against a real `quoteapi serve` process on loopback and its own
/openapi.json, with a valid session token: every operation with schema-valid and schema-invalid
requests, then random sequences of GET/PUT/DELETE on one user checked against a model of the
stored quote. Zero server errors, zero responses that contradict the schema.

The seed is random unless QUOTEAPI_FUZZ_SEED is set, and printed; a failure prints the curl
command(s) that reproduce it."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import httpx
import hypothesis
import pytest
import schemathesis

# Imported here, not lazily by `from_url` mid-test: CPython 3.11's AST constructor can fail
# ("recursion depth mismatch") when pytest rewrites a module imported after a test ran deep.
import schemathesis.specs.openapi.schemas
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    rule,
    run_state_machine_as_test,
)
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.processes import ServerProcess, serve_fixture
from tests.support.tokens import TEST_KEY, mint

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("QUOTEAPI_FUZZ_SEED") or random.randrange(2**31))
# Test cases per operation and phase (schemathesis), and sequences of up to 12 steps (stateful).
EXAMPLES_PER_OPERATION = 60
SEQUENCES = 25
WEBHOOK_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
_CONDITIONAL = ("if-match", "if-none-match")
JSON = "application/json"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def _token(user: str) -> str:
    """A session token that outlives the fuzzing run (the usual test tokens live 60 s)."""
    return mint(TEST_KEY, user, exp=int(time.time()) + 900)


server = serve_fixture(clerk_webhook_signing_secret=WEBHOOK_SECRET)


# Schema-valid requests a correct server may still refuse, each for a reason no schema can
# state: 412 when a random If-Match / If-None-Match does not hold for what is stored; and any
# webhook delivery not signed with the signing secret (the fuzzer cannot sign; the signature
# checks are tests/webhooks').
_POSITIVE_DATA_CONFIG = """\
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "412", "429"]

[[operations]]
include-path = "/webhooks/clerk"
checks.positive_data_acceptance.enabled = false
"""


# Several seeds per run, each new unless QUOTEAPI_FUZZ_SEED is set: the document must hold
# for any seed, not one that happens to pass.
@pytest.mark.parametrize("run", range(3))
def test_every_operation_answers_fuzzed_requests_without_error_or_schema_violation(
    server: ServerProcess, tmp_path: Path, run: int
) -> None:
    """schemathesis's own runner: examples, coverage (boundary and negative values) and
    fuzzing phases over every operation, positive and negative data, every check: a
    schema-valid body is accepted (the document states every rule of the quote), and a
    schema-invalid one refused."""
    seed = SEED + run
    print(f"\nfuzz seed {seed} (rerun with QUOTEAPI_FUZZ_SEED={SEED})")
    (tmp_path / "schemathesis.toml").write_text(_POSITIVE_DATA_CONFIG)
    command = [
        *(sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json"),
        *("--phases", "examples,coverage,fuzzing", "--mode", "all"),
        *("--max-examples", str(EXAMPLES_PER_OPERATION), "--seed", str(seed)),
        *("--header", f"Authorization: Bearer {_token('user_fuzz_runner')}"),
        *("--workers", "1", "--request-timeout", "10"),
        *("--report", "json", "--report-json-path", str(tmp_path / "report.json")),
    ]
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "120"}
    finished = (
        subprocess.run(  # in tmp_path: its config file, and the .schemathesis/ cache it keeps
            command, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
        )
    )
    report = json.loads((tmp_path / "report.json").read_text())
    cases = report["test_cases"]
    print(f"schemathesis: {cases['generated']} cases, {report['operations']['tested']} operations")
    # A failure's output names the check, the response, and the curl command reproducing it.
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert report["operations"]["tested"] == report["operations"]["total"] >= 6
    assert cases["with_failures"] == 0
    assert report["errors"] == []
    assert cases["generated"] >= 200


class QuoteSequences(RuleBasedStateMachine):
    """One user's quote under random GET/PUT/DELETE (schemathesis-generated, valid and invalid):
    each answer is checked against the schema and against what must be stored by then."""

    schema: Any
    base_url: str
    statuses: ClassVar[Counter[str]] = Counter()

    def __init__(self) -> None:
        super().__init__()
        user = f"user_fuzz_{uuid.uuid4().hex[:12]}"
        self.auth = {"Authorization": f"Bearer {_token(user)}"}
        self.stored: str | None = None  # the model: the quote the service must hold
        self.steps: list[str] = []

    def _call(self, case: schemathesis.Case, conditional: bool) -> schemathesis.Response:
        if not conditional and case.headers:  # half the steps: no If-Match / If-None-Match
            case.headers = {k: v for k, v in case.headers.items() if k.lower() not in _CONDITIONAL}
        self.steps.append(case.as_curl_command(headers=self.auth, base_url=self.base_url))
        note("reproduce with:\n" + "\n".join(self.steps))
        response = case.call(base_url=self.base_url, headers=self.auth, timeout=10)
        case.validate_response(response, checks=CHECKS, headers=self.auth)
        self.statuses[f"{case.method} {response.status_code}"] += 1
        return response

    @initialize(start_with_a_quote=st.booleans())
    def start(self, start_with_a_quote: bool) -> None:
        """Half the sequences start from a stored quote, half from none."""
        if start_with_a_quote:
            operation = self.schema["/me/message"]["PUT"]
            case = operation.Case(body={"message": " A first quote. "}, media_type=JSON)
            self.put(case, conditional=False)
            assert self.stored == "A first quote."

    @rule(case=st.deferred(lambda: _strategy("PUT")), conditional=st.booleans())
    def put(self, case: schemathesis.Case, conditional: bool) -> None:
        response = self._call(case, conditional)
        if response.status_code in (200, 201):
            assert (response.status_code == 201) == (self.stored is None)
            self.stored = response.json()["message"]
            assert self.stored == self.stored.strip()

    @rule(case=st.deferred(lambda: _strategy("GET")), conditional=st.booleans())
    def get(self, case: schemathesis.Case, conditional: bool) -> None:
        response = self._call(case, conditional)
        assert response.status_code in (200, 304, 404, 412), response.status_code
        if response.status_code == 200:
            assert response.json()["message"] == self.stored
        else:  # 304 and 412 (a condition) only for a stored quote; 404 whatever the conditions
            assert (response.status_code == 404) == (self.stored is None)

    @rule(case=st.deferred(lambda: _strategy("DELETE")), conditional=st.booleans())
    def delete(self, case: schemathesis.Case, conditional: bool) -> None:
        response = self._call(case, conditional)
        if response.status_code == 204:
            assert self.stored is not None
            self.stored = None
        elif response.status_code in (404, 412):  # 404 whatever the conditions
            assert (response.status_code == 404) == (self.stored is None)


def _strategy(method: str) -> st.SearchStrategy[schemathesis.Case]:
    operation = QuoteSequences.schema["/me/message"][method]
    positive = operation.as_strategy(schemathesis.GenerationMode.POSITIVE)
    if method != "PUT":  # only PUT has a body, so only PUT can be sent invalid data
        return positive
    negative = operation.as_strategy(schemathesis.GenerationMode.NEGATIVE)
    return st.one_of(positive, positive, negative)  # two valid bodies for one invalid


def test_random_sequences_keep_the_stored_quote_consistent(server: ServerProcess) -> None:
    print(f"\nstateful seed {SEED}, {SEQUENCES} sequences of up to 12 steps")
    QuoteSequences.schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    QuoteSequences.base_url = server.url
    run_state_machine_as_test(
        hypothesis.seed(SEED)(QuoteSequences),
        settings=settings(
            max_examples=SEQUENCES,
            stateful_step_count=12,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
    print(f"answers: {dict(sorted(QuoteSequences.statuses.items()))}")
    # The sequences were not vacuous: quotes were saved, read and deleted. (Which other answers
    # a random seed reaches varies: a replace, say, is not certain in 25 short sequences.)
    assert {"PUT 201", "GET 200", "DELETE 204"} <= set(QuoteSequences.statuses)


# --- Hostile input the generators rarely reach (each once returned 500) ----------------------


@pytest.mark.parametrize(
    ("method", "headers", "body"),
    [
        ("PUT", {}, b'{"message": "\\ud800"}'),  # a lone surrogate, valid JSON
        ("PUT", {}, b'{"message": "a\\udc00b"}'),
        ("PUT", {"If-Match": '"99999999999999999999"'}, b'{"message": "x"}'),  # > bigint
        ("PUT", {"If-None-Match": '"99999999999999999999"'}, b'{"message": "x"}'),
        ("PUT", {"If-Match": '"' + "9" * 5000 + '"'}, b'{"message": "x"}'),  # > int() digits
        ("DELETE", {"If-Match": '"99999999999999999999"'}, b""),
        ("GET", {"If-None-Match": '"\xb2"'}, b""),  # superscript two: isdigit() but not int()
        ("PUT", {"If-Match": '"\xb2"'}, b'{"message": "x"}'),
    ],
    ids=[
        "lone-surrogate",
        "lone-low-surrogate",
        "if-match-over-bigint",
        "if-none-match-over-bigint",
        "if-match-5000-digits",
        "delete-if-match-over-bigint",
        "if-none-match-unicode-digit",
        "if-match-unicode-digit",
    ],
)
def test_hostile_input_gets_a_4xx_problem_not_a_500(
    server: ServerProcess, method: str, headers: dict[str, str], body: bytes
) -> None:
    auth = {"Authorization": f"Bearer {_token('user_fuzz_hostile')}"}
    with httpx.Client(base_url=server.url, timeout=10) as http:
        http.put("/me/message", json={"message": "stored"}, headers=auth)
        response = http.request(
            method,
            "/me/message",
            content=body,
            # Latin-1 bytes: the server decodes header bytes as Latin-1 too.
            headers={
                **auth,
                **{name: value.encode("latin-1") for name, value in headers.items()},
                "Content-Type": "application/json",
            },
        )
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json"
