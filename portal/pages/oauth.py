"""The portal as the notebook hub's OAuth2 provider: authorize (a logged-in user's browser),
token (the hub, with its client secret), userinfo (the hub, with the access token)."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import unquote, urlencode

from flask import Blueprint, Response, jsonify, redirect, request

from nifti_archive.notebooks import oauth
from portal.auth import archive, csrf_exempt, current_user, db, logged_in, public

blueprint = Blueprint("oauth", __name__)


def _plain(message: str, status: int) -> Response:
    # Plain text: the message may quote what the request sent.
    return Response(message + "\n", status, mimetype="text/plain")


def _oauth_error(error: oauth.OAuthError) -> Any:
    response = jsonify({"error": error.code, "error_description": str(error)})
    # RFC 6749 §5.2: 401 for failed client authentication, 400 for the rest.
    response.status_code = 401 if error.code == "invalid_client" else 400
    if error.code == "invalid_client":
        response.headers["WWW-Authenticate"] = 'Basic realm="northanc"'
    return response


@blueprint.route("/oauth/authorize")
@logged_in
def authorize() -> Any:
    args = request.args
    user = current_user()
    assert user is not None
    with archive().unit_of_work() as (work, _journal):
        try:
            client = oauth.check_authorization_request(work, args.get("client_id", ""), args.get("redirect_uri", ""),
                                                       args.get("response_type", ""))
            code = oauth.issue_code(work, client, user, args.get("code_challenge", ""), args.get("code_challenge_method", ""))
        except oauth.OAuthError as error:
            return _plain(f"OAuth request refused: {error}", 400)
        target = client.redirect_uri
    answer = {"code": code, **({"state": args["state"]} if "state" in args else {})}
    return redirect(target + ("&" if "?" in target else "?") + urlencode(answer))


def _client_credentials() -> tuple[str, str]:
    """client_secret_basic (RFC 6749 §2.3.1: form-encoded, then base64) or client_secret_post."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            client_id, _, secret = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise oauth.OAuthError("invalid_client", "malformed basic credentials") from None
        return unquote(client_id), unquote(secret)
    return request.form.get("client_id", ""), request.form.get("client_secret", "")


@blueprint.route("/oauth/token", methods=["POST"])
@public
@csrf_exempt
def token() -> Any:
    try:
        client_id, secret = _client_credentials()
        if not client_id:
            raise oauth.OAuthError("invalid_request", "the client sends its id and secret (HTTP basic or form fields)")
        with archive().unit_of_work() as (work, _journal):
            client = oauth.authenticate_client(work, client_id, secret)
            if request.form.get("grant_type") != "authorization_code":
                raise oauth.OAuthError("unsupported_grant_type", "only grant_type=authorization_code is offered")
            try:
                issued: oauth.AccessToken | oauth.OAuthError = oauth.exchange_code(
                    work, client, request.form.get("code", ""), request.form.get("redirect_uri", ""),
                    request.form.get("code_verifier", ""))
            except oauth.OAuthError as refused:
                issued = refused  # answered after the commit: a used code stays used
    except oauth.OAuthError as error:
        return _oauth_error(error)
    if isinstance(issued, oauth.OAuthError):
        return _oauth_error(issued)
    response = jsonify({"access_token": issued.token, "token_type": "Bearer", "expires_in": issued.expires_in})
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.route("/oauth/userinfo")
@public
def userinfo() -> Any:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        # RFC 6750 §3.1 invalid_request: the call names no token at all.
        response = jsonify({"error": "invalid_request", "error_description": "send the access token (Authorization: Bearer ...)"})
        response.status_code = 400
        return response
    user = oauth.user_for_access_token(db(), token.strip())
    if user is None:
        response = jsonify({"error": "invalid_token", "error_description": "the access token is unknown or expired"})
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        return response
    return jsonify(oauth.userinfo(db(), user))
