"""Request guards: the session cookie, CSRF tokens, and the headers every response carries.

CSRF: every POST must carry the form field ``csrf`` equal to the session's token (after
login) or to the pre-login cookie (the login and setup forms, double-submit), and its
``Origin``, when the browser sends one, must be this portal. Cookies are ``Secure``,
``HttpOnly`` and ``SameSite=Strict``, so a cross-site post arrives without them anyway.
"""

from __future__ import annotations

import hmac
import secrets

from flask import Request, Response
from werkzeug.wrappers import Response as BaseResponse

SESSION_COOKIE = "smgw_session"
PRE_COOKIE = "smgw_pre"
LANG_COOKIE = "smgw_lang"

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def same_origin(request: Request) -> bool:
    """No Origin (an old browser, a device) passes; a foreign one never does."""
    origin = request.headers.get("Origin")
    if origin is None:
        fetch_site = request.headers.get("Sec-Fetch-Site")
        return fetch_site in (None, "same-origin", "none")
    return origin == f"{request.scheme}://{request.host}"


def token_matches(sent: str | None, expected: str | None) -> bool:
    return bool(sent) and bool(expected) and hmac.compare_digest(str(sent), str(expected))


def new_pre_token() -> str:
    return secrets.token_urlsafe(24)


def set_cookie(response: BaseResponse, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, secure=True, httponly=True, samesite="Strict", path="/")


def harden(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    # same-origin, not no-referrer: under no-referrer browsers send "Origin: null" on the
    # portal's own form posts, which the CSRF check must refuse; nothing leaves the portal either way
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Strict-Transport-Security"] = "max-age=31536000"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    response.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    if not response.headers.get("Cache-Control"):
        response.headers["Cache-Control"] = "no-store"
    return response
