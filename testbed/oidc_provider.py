"""A small OpenID Provider for the tests, built on Authlib's server side, in a thread on a free port.

Authorisation code flow with PKCE (S256) and OpenID Connect ID tokens signed with its own RSA
key, published at its JWKS endpoint; discovery and an end-session endpoint as real providers
have. Its log-in page asks only for a user name from ``accounts`` (the provider's own password
check is not what the tests are about). ``fault`` makes the token endpoint hand out a bad ID
token, the way a broken or hostile provider, or someone in the middle, would.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from flask import Flask, redirect, request
from joserfc import jwt
from joserfc.jwk import RSAKey
from werkzeug.serving import make_server

from testbed.ports import free_port

LOGIN_FORM = """<!doctype html><title>Test provider</title><h1>Test provider log-in</h1>
<form method="post"><label>Provider user <input name="provider_user"></label>
<button type="submit">Continue</button></form>"""


class Fault(Enum):
    """What is wrong with the ID token the token endpoint hands out."""

    EXPIRED = "expired"
    WRONG_AUDIENCE = "wrong audience"
    WRONG_ISSUER = "wrong issuer"
    TAMPERED = "tampered"  # a claim changed after signing
    FOREIGN_KEY = "foreign key"  # signed by a key the provider does not publish


@dataclass(frozen=True)
class Account:
    sub: str
    username: str
    groups: tuple[str, ...] = ()


@dataclass
class _Client:
    client_id: str
    client_secret: str
    # Registered callbacks: the portal's under gunicorn and under Flask's test client.
    redirect_uris: set[str]

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return next(iter(self.redirect_uris))

    def get_allowed_scope(self, scope: str) -> str:
        return " ".join(s for s in scope.split() if s in {"openid", "profile", "email", "groups"})

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "client_secret_basic"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class _Code:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: Account
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


class OpenIdProvider:
    def __init__(self, client_id: str, client_secret: str) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-1", "use": "sig", "alg": "RS256"})
        self.client = _Client(client_id, client_secret, set())
        self.accounts: dict[str, Account] = {}
        self.fault: Fault | None = None
        self.end_session_calls: list[dict[str, str]] = []
        self._codes: dict[str, _Code] = {}
        self.app = self._app()
        self._server = make_server("127.0.0.1", self.port, self.app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> OpenIdProvider:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()

    def _app(self) -> Flask:
        app = Flask(__name__)
        server = AuthorizationServer(app, query_client=self._query_client, save_token=lambda token, request: None)
        server.register_grant(self._grant(), [CodeChallenge(required=True), self._openid()])

        @app.get("/.well-known/openid-configuration")
        def discovery() -> Any:
            return {
                "issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks",
                "end_session_endpoint": f"{self.issuer}/logout", "response_types_supported": ["code"],
                "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
            }

        @app.get("/jwks")
        def jwks() -> Any:
            return {"keys": [self.key.as_dict(private=False)]}

        @app.route("/authorize", methods=["GET", "POST"])
        def authorize() -> Any:
            if request.method == "GET":
                server.get_consent_grant(end_user=None)
                return LOGIN_FORM
            user = self.accounts.get(request.form["provider_user"])
            return server.create_authorization_response(grant_user=user, grant=server.get_consent_grant(end_user=user))

        @app.post("/token")
        def token() -> Any:
            response = server.create_token_response()
            body = json.loads(response.get_data())
            if "id_token" in body and self.fault is not None:
                body["id_token"] = self._spoil(body["id_token"], self.fault)
                response.set_data(json.dumps(body))
            return response

        @app.get("/logout")
        def logout() -> Any:
            self.end_session_calls.append(dict(request.args))
            return redirect(request.args.get("post_logout_redirect_uri", self.issuer))

        return app

    def _query_client(self, client_id: str) -> _Client | None:
        return self.client if client_id == self.client.client_id else None

    def _grant(self) -> type[Any]:
        codes = self._codes

        class Grant(grants.AuthorizationCodeGrant):  # type: ignore[misc]  # Authlib's classes are untyped
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic"]

            def save_authorization_code(self, code: str, request: Any) -> None:
                data = request.payload.data
                codes[code] = _Code(code, request.client.client_id, request.payload.redirect_uri, request.scope,
                                    request.user, data.get("nonce"), data.get("code_challenge"),
                                    data.get("code_challenge_method"))

            def query_authorization_code(self, code: str, client: _Client) -> _Code | None:
                found = codes.get(code)
                return found if found is not None and found.client_id == client.client_id else None

            def delete_authorization_code(self, authorization_code: _Code) -> None:
                codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code: _Code) -> Account:
                return authorization_code.user

        return Grant

    def _openid(self) -> Any:
        provider = self

        class OpenId(OpenIDCode):  # type: ignore[misc]  # Authlib's classes are untyped
            def resolve_client_private_key(self, client: _Client) -> RSAKey:
                return provider.key

            def get_client_claims(self, client: _Client) -> dict[str, Any]:
                return {"iss": provider.issuer, "aud": [client.client_id]}

            def get_encode_header(self, client: _Client) -> dict[str, str]:
                return {"alg": "RS256", "kid": "test-1"}

            def exists_nonce(self, nonce: str, request: Any) -> bool:
                return False

            def generate_user_info(self, user: Account, scope: str) -> UserInfo:
                return UserInfo(sub=user.sub, preferred_username=user.username, groups=list(user.groups))

        return OpenId(require_nonce=True)

    def _spoil(self, id_token: str, fault: Fault) -> str:
        header, payload, signature = id_token.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        if fault is Fault.TAMPERED:
            claims["preferred_username"] = "someone-else"
            forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
            return f"{header}.{forged}.{signature}"
        key = self.key
        if fault is Fault.EXPIRED:
            claims["iat"], claims["exp"] = int(time.time()) - 7200, int(time.time()) - 3600
        elif fault is Fault.WRONG_AUDIENCE:
            claims["aud"] = ["another-site"]
        elif fault is Fault.WRONG_ISSUER:
            claims["iss"] = "http://127.0.0.1:1"
        else:
            key = RSAKey.generate_key(2048, parameters={"kid": "test-1"})
        return jwt.encode({"alg": "RS256", "kid": "test-1"}, claims, key)
