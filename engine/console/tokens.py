"""API tokens with roles, kept per state directory in `tokens.json`: a name, a role and the SHA-256 of the token.

The token itself is shown once, when it is created, and never stored: a leaked `tokens.json` grants nothing.
Tokens are 256 random bits, so a plain hash is as strong as a slow one (there is nothing to guess from a
dictionary). Roles are ordered: `viewer` reads everything, `operator` also takes savepoints and checkpoints,
`admin` also rolls back, branches, deletes savepoints and applies retention.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

from engine.errors import UserError
from engine.state_dir import StateDir, write_atomic
from engine.storage import Location, location

ROLES = ("viewer", "operator", "admin")
PREFIX = "tl_"


class TokenError(UserError, ValueError):
    """A token request that cannot be carried out (unknown role, duplicate or unknown name)."""


@dataclass(frozen=True)
class Grant:
    """Who a presented token is: its name (what the audit records) and role."""

    name: str
    role: str

    def allows(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _read(directory: StateDir) -> list[dict[str, Any]]:
    try:
        return list(json.loads(directory.tokens.read_text()).get("tokens", []))
    except FileNotFoundError:
        return []
    except ValueError as err:
        raise TokenError(f"{directory.tokens} is not valid JSON ({err}); fix or remove it") from None


def _write(directory: StateDir, records: list[dict[str, Any]]) -> None:
    write_atomic(directory.tokens, json.dumps({"tokens": records}, indent=1).encode())


def _directory(state: str | Location) -> StateDir:
    directory = StateDir(location(state))
    if not directory.manifest.exists():
        raise FileNotFoundError(f"{state} is not a timelapse state directory")
    return directory


def create(state: str | Location, name: str, role: str) -> str:
    """A new token for `state`: returned once; only its hash is kept."""
    if role not in ROLES:
        raise TokenError(f"unknown role '{role}'; roles: {', '.join(ROLES)}")
    if not name or not name.strip():
        raise TokenError("a token needs a name (the audit records it)")
    directory = _directory(state)
    records = _read(directory)
    if any(r["name"] == name and not r.get("revoked_at") for r in records):
        raise TokenError(f"a token named '{name}' already exists; revoke it first or choose another name")
    token = PREFIX + secrets.token_urlsafe(32)
    records.append(
        {
            "name": name,
            "role": role,
            "sha256": digest(token),
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "created_by": getpass.getuser(),
        }
    )
    _write(directory, records)
    return token


def listing(state: str | Location) -> list[dict[str, Any]]:
    """Every token's name, role, creation and revocation; never a hash."""
    return [{k: v for k, v in r.items() if k != "sha256"} for r in _read(_directory(state))]


def revoke(state: str | Location, name: str) -> dict[str, Any]:
    directory = _directory(state)
    records = _read(directory)
    live = [r for r in records if r["name"] == name and not r.get("revoked_at")]
    if not live:
        raise TokenError(f"no live token named '{name}'")
    for record in live:
        record["revoked_at"] = dt.datetime.now(dt.UTC).isoformat()
    _write(directory, records)
    return {"revoked": name}


def configured(state: str | Location) -> bool:
    """Whether `state` has any live token."""
    return any(not r.get("revoked_at") for r in _read(StateDir(location(state))))


def check(state: str | Location, token: str) -> Grant | None:
    """The grant `token` carries for `state`, or None."""
    presented = digest(token)
    for record in _read(StateDir(location(state))):
        if not record.get("revoked_at") and hmac.compare_digest(record["sha256"], presented):
            return Grant(record["name"], record["role"])
    return None
