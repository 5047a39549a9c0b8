"""Access-token verification is remembered per token (vidwiz/auth/tokens.py): a token verified
once is not verified again, yet it still expires on time, and a token that failed is never
remembered as good."""

from __future__ import annotations

import time

import jwt
import pytest

from vidwiz.auth import tokens

SECRET = "tokens-test-secret-0123456789abcdef0123456789"


def access_token(**claims) -> str:
    return jwt.encode({"user_id": 7, "email": "u@example.com", **claims}, SECRET, algorithm=tokens.ALGORITHM)


def test_a_verified_token_is_verified_once(monkeypatch):
    token = access_token(exp=time.time() + 3600)
    assert tokens.decode(SECRET, token)["user_id"] == 7
    calls = []
    monkeypatch.setattr(tokens.jwt, "decode", lambda *args, **kwargs: calls.append(args))
    claims = tokens.decode(SECRET, token)
    assert claims["user_id"] == 7 and calls == []
    claims["user_id"] = 8  # the caller's copy
    assert tokens.decode(SECRET, token)["user_id"] == 7


def test_a_remembered_token_still_expires(monkeypatch):
    expires = time.time() + 60
    token = access_token(exp=expires)
    assert tokens.decode(SECRET, token)["user_id"] == 7
    monkeypatch.setattr(tokens.time, "time", lambda: expires + 1)
    with pytest.raises(tokens.TokenError):
        tokens.decode(SECRET, token)


def test_a_token_that_failed_is_not_remembered():
    token = access_token(exp=time.time() + 3600)
    with pytest.raises(tokens.TokenError):
        tokens.decode("another-secret-0123456789abcdef0123456789", token)
    with pytest.raises(tokens.TokenError):
        tokens.decode("another-secret-0123456789abcdef0123456789", token)
    assert tokens.decode(SECRET, token)["user_id"] == 7
