"""Development tokens signed with the HS256 dev secret (what `connector token mint` prints).

The API accepts them only with ``CONNECTOR_ENV=development``; production keys come from the
identity provider's JWKS.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import jwt

from connector_api.auth import KNOWN_ROLES, InvalidOrgId, canonical_org_id
from connector_api.settings import DEV_ALGORITHM, DEV_AUDIENCE, DEV_ISSUER
from connector_common.events import utcnow


def mint_dev_token(
    secret: str,
    *,
    org: str,
    role: str,
    subject: str,
    ttl_seconds: int = 3600,
    issuer: str = DEV_ISSUER,
    audience: str = DEV_AUDIENCE,
    now: datetime | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """A signed JWT with ``sub``, ``org_id``, ``roles``, ``iss``, ``aud``, ``iat``, ``exp``."""
    if role not in KNOWN_ROLES:
        raise ValueError(f"role must be one of {', '.join(sorted(KNOWN_ROLES))}")
    try:
        canonical = canonical_org_id(org)
    except InvalidOrgId as exc:
        raise ValueError(f"the organisation id {exc}") from None
    if canonical != org:
        raise ValueError(f"the organisation id must be written in its canonical form {canonical!r}")
    if len(secret) < 32:
        raise ValueError("the dev secret must be at least 32 characters")
    issued = now or utcnow()
    claims: dict[str, Any] = {
        "sub": subject,
        "org_id": org,
        "roles": [role],
        "iss": issuer,
        "aud": audience,
        "iat": int(issued.timestamp()),
        "exp": int((issued + timedelta(seconds=ttl_seconds)).timestamp()),
        "jti": uuid.uuid4().hex,
        **(extra or {}),
    }
    return jwt.encode(claims, secret, algorithm=DEV_ALGORITHM)
