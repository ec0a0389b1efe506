"""Who may call the HTTP API: HTTP Basic users and API keys with scopes.

An API key is `tw_<key id>_<secret>`, sent as `Authorization: Bearer <key>`. The
journal keeps the key id, a SHA-256 digest of the secret and the scopes, never the
secret: the key is printed once, when `tapeworker api-key create` makes it. The
secret is 256 random bits, so a fast digest is enough (nothing to brute-force);
digests are compared in constant time, for unknown key ids too. A key verified once is
kept in memory (by a digest of the whole token, so only the very same token matches it)
until the journal's keys change: a key's request costs no journal read, and a key made
or revoked counts from the next request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import get_args

from fastapi import Request, status

from worker.intake.http.errors import ApiError
from worker.seed.error_details import detail
from worker.settings import ApiScope
from worker.state.journal import Journal

#: Every scope: the seed's per-operation ones, the release extension's, the operator's.
SCOPES: tuple[str, ...] = get_args(ApiScope)
#: What a Basic user holds when `[http.user_scopes]` does not list it.
TASK_SCOPES: frozenset[str] = frozenset(s for s in SCOPES if s.startswith("task_destinations/"))
#: What a user of `[http] admin_users` holds on top of its other scopes.
ADMIN_SCOPES: frozenset[str] = frozenset(s for s in SCOPES if s.startswith("admin/"))

_KEY_RE = re.compile(r"^tw_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
#: What an unknown key id is compared against, so that it costs what a known one does.
_NO_DIGEST = hashlib.sha256(b"no such key").hexdigest()
CHALLENGE = 'Basic realm="tapeworker", Bearer realm="tapeworker"'
#: Verified keys kept at most; beyond, the memory starts anew (keys are few).
MAX_VERIFIED_KEYS = 1024


@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: str
    secret: str

    @property
    def token(self) -> str:
        return f"tw_{self.key_id}_{self.secret}"

    @property
    def digest(self) -> str:
        return digest(self.secret)


def new_key() -> NewKey:
    return NewKey(secrets.token_hex(8), secrets.token_urlsafe(32))


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user or a key's name, and the scopes it holds."""

    name: str
    scopes: frozenset[str]


def _unauthorized(message: str, kind: str) -> ApiError:
    return ApiError(
        status.HTTP_401_UNAUTHORIZED,
        message,
        {"Authorization": [detail(kind, "")]},
        headers={"WWW-Authenticate": CHALLENGE},
    )


class Authenticator:
    def __init__(
        self,
        journal: Journal,
        users: Mapping[str, str],
        user_scopes: Mapping[str, Sequence[str]],
        admin_users: Sequence[str] = (),
    ) -> None:
        self._journal = journal
        self._users = dict(users)
        self._user_scopes = {name: frozenset(s) for name, s in user_scopes.items()}
        self._admin_users = frozenset(admin_users)
        #: Keys verified since the journal's keys last changed, by their token's digest.
        self._verified: dict[str, Principal] = {}
        self._verified_at = journal.api_keys_changed

    def _basic(self, encoded: str) -> Principal:
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise _unauthorized("Malformed Basic credentials.", "invalid") from None
        expected = self._users.get(user)
        # Compare in constant time, and also for unknown users, so timing tells nothing.
        ok = secrets.compare_digest(password.encode(), (expected or "\0").encode())
        if not (ok and sep and expected is not None):
            raise _unauthorized("Invalid user name or password.", "invalid")
        scopes = self._user_scopes.get(user, TASK_SCOPES)
        if user in self._admin_users:
            scopes |= ADMIN_SCOPES
        return Principal(user, scopes)

    async def _bearer(self, token: str) -> Principal:
        token = token.strip()
        if self._verified_at != self._journal.api_keys_changed:
            self._verified.clear()
            self._verified_at = self._journal.api_keys_changed
        remembered = digest(token)
        known = self._verified.get(remembered)
        if known is not None:
            return known
        principal = await self._look_up(token)
        if len(self._verified) >= MAX_VERIFIED_KEYS:
            self._verified.clear()
        # Unless a key changed while we looked it up (then the next request looks again).
        if self._verified_at == self._journal.api_keys_changed:
            self._verified[remembered] = principal
        return principal

    async def _look_up(self, token: str) -> Principal:
        match = _KEY_RE.fullmatch(token)
        key = await self._journal.api_key(match.group(1)) if match else None
        given = digest(match.group(2)) if match else digest(token)
        ok = secrets.compare_digest(given, key.digest if key else _NO_DIGEST)
        if not ok or key is None or key.revoked is not None:
            raise _unauthorized("Unknown or revoked API key.", "invalid")
        return Principal(key.name, frozenset(key.scopes))

    async def principal(self, authorization: str | None) -> Principal:
        if not authorization:
            raise _unauthorized("Authentication required: Basic or Bearer.", "blank")
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "basic":
            return self._basic(credentials.strip())
        if scheme.lower() == "bearer":
            return await self._bearer(credentials)
        raise _unauthorized(f"Unsupported authentication scheme {scheme[:20]!r}.", "invalid")

    def require(self, scope: str) -> Callable[[Request], Awaitable[Principal]]:
        """A route dependency: the caller, who must hold `scope`."""
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope}")

        async def dependency(request: Request) -> Principal:
            return await self.authorize(request.headers.get("authorization"), scope)

        return dependency

    async def authorize(self, authorization: str | None, scope: str) -> Principal:
        """The caller of these credentials, who must hold `scope`."""
        principal = await self.principal(authorization)
        if scope not in principal.scopes:
            raise ApiError(
                status.HTTP_403_FORBIDDEN,
                f"{principal.name!r} lacks the scope {scope}.",
                {"scope": [detail("missing", scope)]},
            )
        return principal
