"""The API's actions: savepoints, checkpoints, rollback, branches and retention, each behind its role, each
audited in the manifest under the token's name (through `engine.control`)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["actions"])
