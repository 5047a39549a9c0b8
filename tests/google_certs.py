"""A local stand-in for Google's certificate endpoint and a key that signs Google-style ID tokens.

The real google-auth library verifies tokens signed here against certificates served here, so
the whole verification path (signature, audience, expiry, issuer, key rotation) runs for real.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from functools import lru_cache
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import RSAAlgorithm

CLIENT_ID = "test-client-id.apps.googleusercontent.com"
ISSUER = "https://accounts.google.com"


class SigningKey:
    """An RSA key with a key id, its self-signed X.509 certificate and its JWK."""

    def __init__(self, kid: str | None = None):
        self.kid = kid or uuid.uuid4().hex
        self.private = _private_key(self.kid)
        now = dt.datetime.now(dt.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "securetoken.system.gserviceaccount.com")])
        self.certificate_pem = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .sign(self.private, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
            .decode()
        )
        self.jwk = {
            **json.loads(RSAAlgorithm.to_jwk(self.private.public_key())),
            "kid": self.kid,
            "alg": "RS256",
            "use": "sig",
        }

    def sign(self, claims: dict[str, Any], *, kid: str | None = None) -> str:
        return jwt.encode(claims, self.private, algorithm="RS256", headers={"kid": kid or self.kid})


@lru_cache(maxsize=8)
def _private_key(kid: str) -> rsa.RSAPrivateKey:
    # Key generation costs tens of ms: each key id gets one key per test session.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def google_claims(**overrides: Any) -> dict[str, Any]:
    """Claims of a valid Google ID token for CLIENT_ID; pass `name=None` to drop a claim."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": CLIENT_ID,
        "azp": CLIENT_ID,
        "sub": "1098765432109876543" + uuid.uuid4().hex[:4],
        "email": "someone@gmail.com",
        "email_verified": True,
        "name": "Some One",
        "picture": "https://lh3.googleusercontent.com/a/photo",
        "iat": now - 10,
        "exp": now + 3600,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


class GoogleCerts:
    """The running endpoint: `url` serves `{kid: PEM certificate}`, `jwks_url` the same keys as JWKS."""

    def __init__(self) -> None:
        self.keys = [SigningKey("google-key-1")]
        self.fetches = 0
        self.url = ""
        self.jwks_url = ""

    @property
    def key(self) -> SigningKey:
        return self.keys[0]

    def sign(self, **overrides: Any) -> str:
        return self.key.sign(google_claims(**overrides))

    def app(self) -> web.Application:
        async def pem(request: web.Request) -> web.Response:
            self.fetches += 1
            return web.json_response({k.kid: k.certificate_pem for k in self.keys})

        async def jwks(request: web.Request) -> web.Response:
            self.fetches += 1
            return web.json_response({"keys": [k.jwk for k in self.keys]})

        app = web.Application()
        app.router.add_get("/oauth2/v1/certs", pem)
        app.router.add_get("/oauth2/v3/certs", jwks)
        return app


@pytest.fixture
async def google_certs(aiohttp_server) -> GoogleCerts:
    certs = GoogleCerts()
    server = await aiohttp_server(certs.app())
    certs.url = str(server.make_url("/oauth2/v1/certs"))
    certs.jwks_url = str(server.make_url("/oauth2/v3/certs"))
    return certs
