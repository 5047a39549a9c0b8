"""JWT access and long-term tokens (docs/api.md §2.1, §2.3): HS256 pinned, access tokens must expire."""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

ALGORITHM = "HS256"
LONG_TERM = "long_term"
MAX_USER_ID = 2**31 - 1  # users.id is an INTEGER column: a larger id can only be a bad payload
# RFC 7519 NumericDate claims. PyJWT also takes numeric strings ("9999999999"); we do not.
NUMERIC_DATE_CLAIMS = ("exp", "nbf", "iat")


class TokenError(Exception):
    """The token is not a valid, unexpired HS256 JWT signed with our key."""


def issue_access_token(
    secret_key: str, *, user_id: int, email: str, name: str | None, profile_image_url: str | None, expiry_hours: int
) -> str:
    claims = {
        "user_id": user_id,
        "email": email,
        "name": name or email,
        "profile_image_url": profile_image_url,
        "exp": datetime.now(UTC) + timedelta(hours=expiry_hours),
    }
    return jwt.encode(claims, secret_key, algorithm=ALGORITHM)


def issue_long_term_token(secret_key: str, *, user_id: int, email: str) -> str:
    claims = {"user_id": user_id, "email": email, "type": LONG_TERM, "iat": time.time()}
    return jwt.encode(claims, secret_key, algorithm=ALGORITHM)


def decode(secret_key: str, token: str) -> dict[str, Any]:
    """Verify signature (HS256 only), expiry, and that `exp`/`nbf`/`iat` are numbers. Access
    tokens must carry `exp` (docs/api.md D13);
    long-term tokens never expire and are checked against the user row instead.

    A client sends the same token with every request: its verification is remembered (a bounded
    LRU of the tokens that passed), and only the expiry is checked again."""
    claims = _verified(secret_key, token)
    exp = claims.get("exp")
    if exp is not None and exp <= time.time():  # as PyJWT decides it (no leeway)
        raise TokenError("Signature has expired")
    return dict(claims)  # a copy: the remembered claims stay as verified


@functools.lru_cache(maxsize=4096)
def _verified(secret_key: str, token: str) -> dict[str, Any]:
    """The checks of `decode`; a token that fails is not remembered (lru_cache keeps no exception)."""
    if not token.isascii():  # a JWT is base64url text; anything else (even undecodable bytes) is garbage
        raise TokenError("token is not ASCII")
    try:
        claims = jwt.decode(token, secret_key, algorithms=[ALGORITHM], options={"require": []})
    except jwt.PyJWTError as exc:
        raise TokenError(str(exc)) from None
    if not isinstance(claims, dict):
        raise TokenError("claims are not an object")
    for name in NUMERIC_DATE_CLAIMS:
        value = claims.get(name)
        if name in claims and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise TokenError(f"{name} is not a number")
    if claims.get("type") != LONG_TERM and "exp" not in claims:
        raise TokenError("access token without exp")
    return claims


def claim_user_id(claims: dict[str, Any]) -> int | None:
    """The claimed user id, or None when it cannot name a user (missing, falsy, not a
    number, out of the id column's range)."""
    value = claims.get("user_id")
    if value is None or isinstance(value, bool):
        return None
    try:
        user_id = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: Infinity
        return None
    return user_id if 1 <= user_id <= MAX_USER_ID else None
