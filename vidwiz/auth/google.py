"""Google ID-token verification (docs/api.md §2.7, D12) with cached certificates.

google-auth's `verify_token` fetches the certificates on every call and does not check
the issuer; this wrapper caches the certs for an hour, checks `iss`, runs the (sync)
verification off the event loop, and maps every token failure to one exception.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from google.auth import jwt as google_jwt
from jwt import PyJWTError
from jwt.algorithms import RSAAlgorithm

log = logging.getLogger(__name__)

ISSUERS = ("accounts.google.com", "https://accounts.google.com")
CERTS_TTL_SECONDS = 3600
# A token naming an unknown key id triggers a refetch (Google rotates keys), at most this often,
# so made-up key ids cannot turn every sign-in attempt into a request to Google.
MIN_REFRESH_SECONDS = 30.0


class GoogleTokenError(Exception):
    """The credential is not a valid Google ID token for our client id."""


class GoogleCertsUnavailable(Exception):
    """Google's certificates could not be fetched: no credential can be checked right now."""


class _UnknownKeyId(GoogleTokenError):
    pass


class GoogleVerifier:
    def __init__(
        self,
        client_id: str,
        certs_url: str,
        session: aiohttp.ClientSession,
        *,
        min_refresh_seconds: float = MIN_REFRESH_SECONDS,
    ):
        self.client_id = client_id
        self.certs_url = certs_url
        self.session = session
        self.min_refresh_seconds = min_refresh_seconds
        self._certs: dict[str, str] | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def _get_certs(self, *, refresh: bool = False) -> dict[str, str]:
        async with self._lock:
            age = time.monotonic() - self._fetched_at
            certs = self._certs
            if certs is None or age >= CERTS_TTL_SECONDS or (refresh and age >= self.min_refresh_seconds):
                certs = self._certs = await self._fetch()
                self._fetched_at = time.monotonic()
            return certs

    async def _fetch(self) -> dict[str, str]:
        try:
            async with self.session.get(self.certs_url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                resp.raise_for_status()
                return _parse_certs(json.loads(await resp.text()))
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            log.error("could not fetch Google certificates from %s: %r", self.certs_url, exc)
            raise GoogleCertsUnavailable(str(exc)) from None

    async def verify(self, credential: str) -> dict[str, Any]:
        """The verified claims; raises GoogleTokenError or GoogleCertsUnavailable."""
        try:
            return await asyncio.to_thread(self._decode, credential, await self._get_certs())
        except _UnknownKeyId:
            # Google may have rotated its keys since we fetched them: refetch (throttled), retry once.
            certs = await self._get_certs(refresh=True)
        return await asyncio.to_thread(self._decode, credential, certs)

    def _decode(self, credential: str, certs: dict[str, str]) -> dict[str, Any]:
        try:
            # google-auth's jwt module is unannotated (though the package ships py.typed).
            kid = google_jwt.decode_header(credential).get("kid")  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise GoogleTokenError(f"malformed token: {exc!r}") from None
        if kid is not None and (not isinstance(kid, str) or kid not in certs):
            raise _UnknownKeyId("unknown key id")
        try:
            claims = google_jwt.decode(  # type: ignore[no-untyped-call]  # unannotated in google-auth
                credential, certs=certs, audience=self.client_id, clock_skew_in_seconds=0
            )
        except Exception as exc:
            raise GoogleTokenError(str(exc)) from None
        if not isinstance(claims, dict) or claims.get("iss") not in ISSUERS:
            raise GoogleTokenError("wrong issuer")
        return claims


def _parse_certs(document: Any) -> dict[str, str]:
    """Accept Google's `{kid: PEM certificate}` form or a JWKS document; ValueError otherwise."""
    if isinstance(document, dict) and isinstance(document.get("keys"), list):
        try:
            return {key["kid"]: _jwk_to_pem(key) for key in document["keys"]}
        except (KeyError, TypeError, PyJWTError) as exc:
            raise ValueError(f"bad JWKS key: {exc!r}") from None
    if isinstance(document, dict) and all(isinstance(v, str) for v in document.values()):
        return dict(document)
    raise ValueError("unrecognised certificate document")


def _jwk_to_pem(key: dict[str, Any]) -> str:
    rsa_key = RSAAlgorithm.from_jwk(json.dumps(key))
    # A JWK with the private numbers loads as a private key: only its public half is a certificate.
    public = rsa_key.public_key() if isinstance(rsa_key, RSAPrivateKey) else rsa_key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
