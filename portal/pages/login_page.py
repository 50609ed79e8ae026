"""The log-in page as every log-in route answers with it: local form, OIDC buttons, LDAP forms."""

from __future__ import annotations

import math
from urllib.parse import urlsplit

from flask import render_template, url_for

from nifti_archive.accounts import LoginResult
from portal.auth import archive

WRONG_PASSWORD = "wrong user name or password"


def safe_next(target: str | None) -> str:
    """Only a path on this site: a crafted ``next`` must not send a user elsewhere after log-in."""
    if not target:
        return url_for("projects.index")
    parts = urlsplit(target)
    # Browsers read "/\evil.example" as "//evil.example" and drop tabs and newlines before they
    # parse a Location, so neither may reach one.
    if (parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//")
            or "\\" in target or not target.isprintable()):
        return url_for("projects.index")
    return target


def login_page(next_url: str, error: str | None = None, status: int = 200) -> tuple[str, int]:
    settings = archive().settings
    page = render_template("login.html", next=next_url, error=error, local_login=settings.local_login,
                           oidc=settings.identity.oidc, ldap=settings.identity.ldap)
    return page, status


def throttled_page(result: LoginResult, next_url: str) -> tuple[str, int, dict[str, str]]:
    seconds = max(1, math.ceil(result.retry_after.total_seconds()))
    page, status = login_page(next_url, f"too many wrong passwords: try again in {seconds} seconds", 429)
    return page, status, {"Retry-After": str(seconds)}
