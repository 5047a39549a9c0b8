"""Google ID-token verification (API.md §2.7, D12) with cached certificates.

google-auth's `verify_token` fetches the certificates on every call and does not check
the issuer; this wrapper caches the certs for an hour, checks `iss`, runs the (sync)
verification off the event loop, and maps every failure to one exception.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
from google.auth import jwt as google_jwt

ISSUERS = ("accounts.google.com", "https://accounts.google.com")
CERTS_TTL_SECONDS = 3600


class GoogleTokenError(Exception):
    """The credential is not a valid Google ID token for our client id."""


class GoogleVerifier:
    def __init__(self, client_id: str, certs_url: str, session: aiohttp.ClientSession):
        self.client_id = client_id
        self.certs_url = certs_url
        self.session = session
        self._certs: dict[str, str] | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def _get_certs(self, *, refresh: bool = False) -> dict[str, str]:
        async with self._lock:
            fresh = self._certs is not None and time.monotonic() - self._fetched_at < CERTS_TTL_SECONDS
            if refresh or not fresh:
                try:
                    async with self.session.get(self.certs_url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                        resp.raise_for_status()
                        self._certs = _parse_certs(json.loads(await resp.text()))
                except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                    raise GoogleTokenError(f"could not fetch Google certificates: {exc}") from None
                self._fetched_at = time.monotonic()
            return self._certs

    async def verify(self, credential: str) -> dict[str, Any]:
        certs = await self._get_certs()
        try:
            return await asyncio.to_thread(self._decode, credential, certs)
        except GoogleTokenError as exc:
            if "unknown key" not in str(exc):
                raise
        # Google rotates keys: refetch once when the token names a kid we do not know.
        return await asyncio.to_thread(self._decode, credential, await self._get_certs(refresh=True))

    def _decode(self, credential: str, certs: dict[str, str]) -> dict[str, Any]:
        try:
            header = google_jwt.decode_header(credential)
        except (ValueError, TypeError) as exc:
            raise GoogleTokenError(f"malformed token: {exc}") from None
        if header.get("kid") and header["kid"] not in certs:
            raise GoogleTokenError("unknown key id")
        try:
            claims = google_jwt.decode(credential, certs=certs, audience=self.client_id, clock_skew_in_seconds=0)
        except Exception as exc:  # noqa: BLE001 - any library failure means an invalid credential
            raise GoogleTokenError(str(exc)) from None
        if claims.get("iss") not in ISSUERS:
            raise GoogleTokenError("wrong issuer")
        return claims


def _parse_certs(document: Any) -> dict[str, str]:
    """Accept Google's `{kid: PEM}` form or a JWKS document."""
    if isinstance(document, dict) and "keys" in document:
        from cryptography.hazmat.primitives import serialization
        from jwt.algorithms import RSAAlgorithm

        certs = {}
        for key in document["keys"]:
            public = RSAAlgorithm.from_jwk(json.dumps(key))
            certs[key["kid"]] = public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ).decode()
        return certs
    if isinstance(document, dict) and all(isinstance(v, str) for v in document.values()):
        return dict(document)
    raise ValueError("unrecognised certificate document")
