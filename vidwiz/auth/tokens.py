"""JWT access and long-term tokens (API.md §2.1, §2.3): HS256 pinned, access tokens must expire."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

import jwt

ALGORITHM = "HS256"
LONG_TERM = "long_term"


class TokenError(Exception):
    """The token is not a valid, unexpired HS256 JWT signed with our key."""


def issue_access_token(secret_key: str, *, user_id: int, email: str, name: str | None,
                       profile_image_url: str | None, expiry_hours: int) -> str:
    claims = {
        "user_id": user_id,
        "email": email,
        "name": name or email,
        "profile_image_url": profile_image_url,
        "exp": datetime.now(timezone.utc) + timedelta(hours=expiry_hours),
    }
    return jwt.encode(claims, secret_key, algorithm=ALGORITHM)


def issue_long_term_token(secret_key: str, *, user_id: int, email: str) -> str:
    claims = {"user_id": user_id, "email": email, "type": LONG_TERM, "iat": time.time()}
    return jwt.encode(claims, secret_key, algorithm=ALGORITHM)


def decode(secret_key: str, token: str) -> dict[str, Any]:
    """Verify signature (HS256 only) and expiry. Access tokens must carry `exp` (API.md D13);
    long-term tokens never expire and are checked against the user row instead."""
    if not token.isascii():  # a JWT is base64url text; anything else (even undecodable bytes) is garbage
        raise TokenError("token is not ASCII")
    try:
        claims = jwt.decode(token, secret_key, algorithms=[ALGORITHM], options={"require": []})
    except jwt.PyJWTError as exc:
        raise TokenError(str(exc)) from None
    if not isinstance(claims, dict):
        raise TokenError("claims are not an object")
    if claims.get("type") != LONG_TERM and "exp" not in claims:
        raise TokenError("access token without exp")
    return claims


def claim_user_id(claims: dict[str, Any]) -> int | None:
    value = claims.get("user_id")
    if isinstance(value, bool) or not value:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
