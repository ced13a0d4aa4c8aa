"""Schemathesis against the real API (issue 13): every operation of the OpenAPI document gets
generated requests, valid and invalid, with an admin token, over real HTTP to the app served
by uvicorn (lifespan, PostgreSQL, NATS). Any 5xx, or a response that breaks the document
(status code, content type, headers, body), fails the test.

Bounded for `make test` to about 1,000 cases; `make fuzz` runs the same with
``CONNECTOR_FUZZ_CASES`` (e.g. 20,000) for a longer search.
"""

from __future__ import annotations

import base64
import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from pydantic import SecretStr
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from connector_api.devtokens import mint_dev_token
from connector_common.crypto import TokenCipher
from connector_common.events import utcnow
from connector_common.settings import EbaySettings, parse_key_ring
from connector_devstack.embedded import free_port
from tests.api.conftest import make_settings
from tests.api.served import ServedApi
from tests.fixtures.infra import PostgresServer, unique_name
from tests.fixtures.keys import plain_url

CASES = int(os.environ.get("CONNECTOR_FUZZ_CASES", "1000"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
ORG = "fuzz"
SEEDED = 20


@dataclass
class Fuzzed:
    url: str
    token: str
    accounts: list[str]
    cases: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


def seed(database_url: str, token_keys: str) -> list[str]:
    """Accounts of the fuzzed org, so generated paths sometimes name a real one."""
    cipher = TokenCipher(parse_key_ring(token_keys))
    ids = [uuid.uuid4() for _ in range(SEEDED)]
    org = uuid.uuid4()
    now = utcnow()
    with psycopg.connect(plain_url(database_url)) as conn:
        conn.execute(
            "INSERT INTO organisations (id, external_id, name) VALUES (%s, %s, %s)", (org, ORG, ORG)
        )
        for n, account_id in enumerate(ids):
            conn.execute(
                "INSERT INTO ebay_accounts (id, org_id, house_name, ebay_user_id, marketplace_id,"
                " site_id, site_code, connected_at)"
                " VALUES (%s, %s, %s, %s, 'EBAY_GB', 3, 'UK', %s)",
                (account_id, org, f"Fuzz-{n}", f"u{n}", now),
            )
            conn.execute(
                "INSERT INTO ebay_tokens (account_id, access_token_ct, refresh_token_ct, key_id,"
                " access_expires_at) VALUES (%s, %s, %s, %s, %s)",
                (
                    account_id,
                    cipher.encrypt("access", account_id, "access_token"),
                    cipher.encrypt("refresh", account_id, "refresh_token"),
                    cipher.primary_key_id,
                    now + timedelta(hours=2),
                ),
            )
    return [str(a) for a in ids]


@pytest.fixture(scope="module")
def fuzzed(pg_server: PostgresServer, template_db: str, nats_url: str) -> Iterator[Fuzzed]:
    """The API on a port of its own, on a database of its own, with an admin token."""
    name = unique_name("connector_fuzz_")
    database_url = pg_server.create_database(name, template=template_db)
    token_keys = "k1:" + base64.b64encode(os.urandom(32)).decode()
    dev_secret = secrets.token_urlsafe(32)
    # Configured as production would be: eBay's account-deletion endpoint answers its challenge
    # (unconfigured, it is a deliberate 503).
    ebay = EbaySettings(
        local_base_url="http://127.0.0.1:9",
        max_attempts=1,
        deletion={"verification_token": SecretStr(secrets.token_urlsafe(40))},
    )
    settings = make_settings(
        database_url, nats_url, unique_name("t"), token_keys, dev_secret, ebay=ebay
    )
    accounts = seed(database_url, token_keys)
    try:
        with ServedApi(settings, free_port()) as served:
            token = mint_dev_token(
                dev_secret, org=ORG, role="admin", subject="fuzzer", ttl_seconds=3600
            )
            yield Fuzzed(served.url, token, accounts)
    finally:
        pg_server.drop_database(name)


def test_generated_requests_get_no_5xx_and_answers_that_match_the_document(
    fuzzed: Fuzzed,
) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed.url}/openapi.json")
    results = list(schema.get_all_operations())
    operations = [r.ok() for r in results if isinstance(r, Ok)]
    assert len(operations) == len(results), "the OpenAPI document has invalid operations"
    # Half valid, half invalid (which includes requests without the token: 401 expected).
    per_operation = max(2, CASES // (2 * len(operations)))
    headers = {"Authorization": f"Bearer {fuzzed.token}"}
    failures: list[str] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=per_operation,
                deadline=None,
                database=None,
                # make test: the same cases every run; make fuzz: new ones each time.
                derandomize="CONNECTOR_FUZZ_CASES" not in os.environ,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode), pick=st.integers(0, 99))
            def exercise(case: Case[Any], pick: int) -> None:
                if "account_id" in (case.path_parameters or {}) and pick < 50:
                    # Half the time a real account of the org, so routes get past their 404.
                    case.path_parameters["account_id"] = fuzzed.accounts[pick % SEEDED]
                response = case.call(base_url=fuzzed.url, headers=headers, timeout=30)
                fuzzed.cases += 1
                fuzzed.statuses[response.status_code] = (
                    fuzzed.statuses.get(response.status_code, 0) + 1
                )
                case.validate_response(response, checks=CHECKS)

            try:
                exercise()
            except Unsatisfiable:
                continue  # nothing to make invalid (an operation without parameters)
            except Exception as exc:  # collect every operation's failure, then fail once
                failures.append(f"{operation.label} ({mode.value}): {exc}"[:3000])
    print(f"fuzzed {fuzzed.cases} cases; statuses {sorted(fuzzed.statuses.items())}")
    assert not failures, "\n\n".join(failures)
    assert fuzzed.cases >= min(CASES, 500) * 0.5
