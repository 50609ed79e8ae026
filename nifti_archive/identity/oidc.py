"""OpenID Connect, authorisation code flow with PKCE, from the relying party's side.

Authlib's OAuth 2 client builds the authorisation URL (S256 code challenge) and exchanges the
code; joserfc checks the ID token's signature against the provider's published keys and its
issuer, audience, expiry and nonce. Discovery documents and key sets are cached per process
for a few minutes; a failed fetch is never cached, so a provider that comes back is used again.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc6749.errors import OAuth2Error
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from nifti_archive.errors import ArchiveError, ServiceUnavailable
from nifti_archive.identity.config import OidcProvider
from nifti_archive.identity.linking import ExternalIdentity
from nifti_archive.models import AccountOrigin

log = logging.getLogger(__name__)
FETCH_TIMEOUT_SECONDS = 5.0
CACHE_SECONDS = 300.0
# Clock difference tolerated between the provider and us when checking expiry.
LEEWAY_SECONDS = 60
SIGNING_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]


class ProviderUnavailable(ServiceUnavailable):
    """The provider cannot be reached or answers nonsense (the portal answers 503)."""


class InvalidIdToken(ArchiveError):
    """The ID token or the token answer failed a check: never a log-in."""


@dataclass(frozen=True)
class Endpoints:
    """What the provider's discovery document says (only the parts we use)."""

    authorization: str
    token: str
    jwks_uri: str
    end_session: str | None


@dataclass(frozen=True)
class PendingLogin:
    """Kept (signed) in the browser's session between the redirect and the callback; used once."""

    provider: str
    state: str
    nonce: str
    code_verifier: str
    next: str

    def as_dict(self) -> dict[str, str]:
        return {"provider": self.provider, "state": self.state, "nonce": self.nonce,
                "code_verifier": self.code_verifier, "next": self.next}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PendingLogin:
        return cls(**{key: str(raw[key]) for key in ("provider", "state", "nonce", "code_verifier", "next")})


class _Cache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, Any]] = {}

    def get(self, url: str, fetch: Callable[[str], Any], fresh: bool = False) -> Any:
        with self._lock:
            entry = self._entries.get(url)
        if entry is not None and not fresh and time.monotonic() - entry[0] < CACHE_SECONDS:
            return entry[1]
        value = fetch(url)
        with self._lock:
            self._entries[url] = (time.monotonic(), value)
        return value


_cache = _Cache()


def _fetch_json(url: str) -> dict[str, Any]:
    try:
        answer = requests.get(url, timeout=FETCH_TIMEOUT_SECONDS)
        answer.raise_for_status()
        document = answer.json()
    except (requests.RequestException, ValueError) as exc:
        log.warning("OpenID provider fetch %s failed: %s", url, exc)
        raise ProviderUnavailable("the log-in provider cannot be reached just now; try again later") from None
    if not isinstance(document, dict):
        raise ProviderUnavailable(f"the log-in provider's {url} is not a JSON object")
    return document


def _discover(url: str) -> Endpoints:
    document = _fetch_json(url)
    try:
        return Endpoints(
            str(document["authorization_endpoint"]), str(document["token_endpoint"]), str(document["jwks_uri"]),
            str(document["end_session_endpoint"]) if document.get("end_session_endpoint") else None,
        )
    except KeyError as exc:
        raise ProviderUnavailable(f"the log-in provider's discovery document lacks {exc.args[0]}") from None


def endpoints(provider: OidcProvider) -> Endpoints:
    endpoints_: Endpoints = _cache.get(provider.issuer + "/.well-known/openid-configuration", _discover)
    return endpoints_


def _client(provider: OidcProvider, client_secret: str, redirect_uri: str) -> OAuth2Session:
    return OAuth2Session(
        provider.client_id, client_secret, scope=" ".join(provider.scopes), redirect_uri=redirect_uri,
        code_challenge_method="S256", token_endpoint_auth_method="client_secret_basic",
    )


def begin(provider: OidcProvider, redirect_uri: str, next_url: str) -> tuple[str, PendingLogin]:
    """The provider's authorisation URL to send the browser to, and what the callback must match."""
    pending = PendingLogin(provider.name, secrets.token_urlsafe(24), secrets.token_urlsafe(24),
                           secrets.token_urlsafe(48), next_url)
    url, _state = _client(provider, "", redirect_uri).create_authorization_url(
        endpoints(provider).authorization, state=pending.state, code_verifier=pending.code_verifier, nonce=pending.nonce,
    )
    return str(url), pending


def _key_set(provider: OidcProvider, fresh: bool) -> KeySet:
    document = _cache.get(endpoints(provider).jwks_uri, _fetch_json, fresh=fresh)
    try:
        return KeySet.import_key_set(document)
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ProviderUnavailable(f"the log-in provider's key set does not parse: {exc}") from None


def validate_id_token(id_token: str, keys: KeySet, provider: OidcProvider, nonce: str, now: int | None = None) -> dict[str, Any]:
    """The token's claims once its signature, issuer, audience, expiry and nonce all check out."""
    try:
        token = jwt.decode(id_token, keys, algorithms=SIGNING_ALGORITHMS)
        jwt.JWTClaimsRegistry(
            now=now, leeway=LEEWAY_SECONDS, iss={"essential": True, "value": provider.issuer},
            aud={"essential": True, "value": provider.client_id}, exp={"essential": True},
            sub={"essential": True}, nonce={"essential": True, "value": nonce},
        ).validate(token.claims)
    except (JoseError, ValueError) as exc:
        raise InvalidIdToken(f"the provider's ID token was refused: {type(exc).__name__}: {exc}") from None
    audiences = token.claims["aud"] if isinstance(token.claims["aud"], list) else [token.claims["aud"]]
    # With several audiences the token must say it was issued to us (OpenID Connect Core 3.1.3.7).
    if len(audiences) > 1 and token.claims.get("azp") != provider.client_id:
        raise InvalidIdToken("the provider's ID token names several audiences but was not issued to this site")
    return dict(token.claims)


def _verified_claims(provider: OidcProvider, id_token: str, nonce: str) -> dict[str, Any]:
    try:
        return validate_id_token(id_token, _key_set(provider, fresh=False), provider, nonce)
    except InvalidIdToken:
        # The provider may have rotated its keys since we fetched them: one fresh look.
        return validate_id_token(id_token, _key_set(provider, fresh=True), provider, nonce)


def identity_from_claims(provider: OidcProvider, claims: Mapping[str, Any]) -> ExternalIdentity:
    username = claims.get(provider.username_claim)
    if not isinstance(username, str) or not username:
        raise InvalidIdToken(f"the provider sent no {provider.username_claim!r} claim to name the user by")
    raw = claims.get(provider.roles_claim) if provider.roles_claim else None
    values = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
    # The issuer the token was checked against: the one the provider's entry names.
    return ExternalIdentity(AccountOrigin.OIDC, provider.name, str(claims["sub"]), username,
                            frozenset(str(value) for value in values), issuer=provider.issuer)


def finish(provider: OidcProvider, client_secret: str, pending: PendingLogin, redirect_uri: str, code: str) -> ExternalIdentity:
    """Exchange the code (with the PKCE verifier) and check the ID token; who the provider says logged in."""
    client = _client(provider, client_secret, redirect_uri)
    try:
        answer = client.fetch_token(
            endpoints(provider).token, grant_type="authorization_code", code=code, code_verifier=pending.code_verifier,
            timeout=FETCH_TIMEOUT_SECONDS,
        )
    except requests.RequestException as exc:
        log.warning("OpenID provider %s token endpoint failed: %s", provider.name, exc)
        raise ProviderUnavailable("the log-in provider cannot be reached just now; try again later") from None
    except OAuth2Error as exc:
        raise InvalidIdToken(f"the provider refused the log-in: {exc.error}") from None
    id_token = answer.get("id_token")
    if not isinstance(id_token, str):
        raise InvalidIdToken("the provider's answer holds no ID token")
    return identity_from_claims(provider, _verified_claims(provider, id_token, pending.nonce))


def end_session_url(provider: OidcProvider, after_logout: str) -> str | None:
    """Where to send the browser so the provider's session ends too (RP-initiated log-out), if it can."""
    try:
        end_session = endpoints(provider).end_session
    except ProviderUnavailable:
        return None
    if end_session is None:
        return None
    query = urlencode({"client_id": provider.client_id, "post_logout_redirect_uri": after_logout})
    return f"{end_session}{'&' if '?' in end_session else '?'}{query}"
