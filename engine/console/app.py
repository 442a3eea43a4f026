"""The console's web application: the pages (static files shipped in the package) and the REST API under `/api/`.

Every API call carries a token (`Authorization: Bearer ...`); `require(role)` checks it against the state
directory the call names (each directory keeps its own tokens, `engine/console/tokens.py`). A missing or
unknown token is 401, a role too low or a directory the token has no access to is 403; both are logged on the
`timelapse.console` logger. The pages are a static shell: they hold the token in the browser's session storage
and fetch everything through the API, so no cookie exists that another site could ride on.
"""

from __future__ import annotations

import getpass
import hmac
import logging
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from engine.console import tokens
from engine.console.tokens import Grant
from engine.errors import Busy, EngineError, StorageFailure, UserError
from engine.history import History
from engine.storage import Location, location

LOG = logging.getLogger("timelapse.console")
STATIC = Path(__file__).parent / "static"
#: the pages run only the package's own scripts and talk only to this server: an injected script or a frame on
#: another site cannot read the token
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
#: operator state and diffs kept in memory for paging and the slider, least recently used first out
FRAME_CACHE_BYTES = 512 * 1024 * 1024


@dataclass
class Console:
    """The state directories a console serves, by name, and who may do what on them."""

    directories: dict[str, Location] = field(default_factory=dict)
    storage_options: Mapping[str, str] | None = None
    #: the token `timelapse ui` made up for this session when no directory has tokens (admin on every directory)
    session_token: str | None = None
    session_user: str = ""
    #: one History per pipeline, reused: it keeps the manifest rows until the manifest's log changes
    _histories: dict[str, History] = field(default_factory=dict)
    _frames: OrderedDict[tuple[Any, ...], pl.DataFrame] = field(default_factory=OrderedDict)

    @classmethod
    def serving(cls, dirs: Sequence[str | Location], storage_options: Mapping[str, str] | None = None) -> Console:
        console = cls(storage_options=storage_options)
        for directory in dirs:
            console.add(directory)
        return console

    def add(self, directory: str | Location) -> str:
        """Serve one more directory (a branch made from the console); its name is the folder's, made unique."""
        path = location(directory, self.storage_options).absolute()
        for name, known in self.directories.items():
            if str(known) == str(path):
                return name
        base = path.name or "pipeline"
        name, n = base, 2
        while name in self.directories:
            name, n = f"{base}-{n}", n + 1
        self.directories[name] = path
        return name

    def path(self, name: str) -> Location:
        try:
            return self.directories[name]
        except KeyError:
            raise HTTPException(404, f"no pipeline named '{name}'") from None

    def history(self, name: str) -> History:
        """The (cached) history of pipeline `name`; 404 for a pipeline this console does not serve."""
        path = self.path(name)
        found = self._histories.get(name)
        if found is None:
            found = self._histories[name] = History(path, self.storage_options)
        return found

    def frame(self, key: tuple[Any, ...], compute: Callable[[], pl.DataFrame]) -> pl.DataFrame:
        """A table as of a committed cut, computed once: a cut never changes, so the slider, paging and the filter
        reuse it (reading a million keys' state takes seconds, slicing it milliseconds). The least recently used
        frames go beyond FRAME_CACHE_BYTES. `key` must name the manifest row (its commit time), not `at`."""
        found = self._frames.get(key)
        if found is not None:
            self._frames.move_to_end(key)
            return found
        found = self._frames[key] = compute()
        while len(self._frames) > 1 and sum(f.estimated_size() for f in self._frames.values()) > FRAME_CACHE_BYTES:
            self._frames.popitem(last=False)
        return found

    def require_savepoint(self, name: str, savepoint: str | None) -> None:
        """404 for a savepoint pipeline `name` does not have (before any request reaches a running pipeline)."""
        from engine.manifest import live_savepoints

        if savepoint is not None and savepoint not in live_savepoints(self.history(name).manifest_rows()):
            raise HTTPException(404, f"no savepoint named '{savepoint}'")

    def name_of(self, path: str | Location) -> str | None:
        """The console name of the directory at `path`, if this console serves it."""
        wanted = str(location(path, self.storage_options).absolute())
        return next((n for n, p in self.directories.items() if str(p) == wanted), None)

    def visible(self, token: str) -> dict[str, Grant]:
        """The pipelines `token` may see, with its grant on each."""
        return {n: g for n in self.directories if (g := self.grant(n, token)) is not None}

    def tokens_configured(self) -> bool:
        return any(tokens.configured(path) for path in self.directories.values())

    def start_session(self) -> str:
        """A token for this console's lifetime only, admin on every directory: held in memory, never written."""
        self.session_token = tokens.PREFIX + secrets.token_urlsafe(32)
        self.session_user = f"{getpass.getuser()} (console session)"
        return self.session_token

    def grant(self, name: str, token: str) -> Grant | None:
        """What `token` may do on pipeline `name`."""
        if self.session_token is not None and hmac.compare_digest(token, self.session_token):
            return Grant(self.session_user, "admin")
        return tokens.check(self.directories[name], token)

    def known(self, token: str) -> bool:
        """Whether `token` is valid for some directory (a wrong token is 401, a token for another directory 403)."""
        return any(self.grant(name, token) is not None for name in self.directories)


def bearer(request: Request) -> str:
    """The request's token (the auth dependency already checked there is one)."""
    return _bearer(request) or ""


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _deny(request: Request, status: int, why: str) -> HTTPException:
    client = request.client.host if request.client else "?"
    LOG.warning("denied %s %s %s from %s: %s", status, request.method, request.url.path, client, why)
    return HTTPException(status, why, headers={"WWW-Authenticate": "Bearer"} if status == 401 else None)


def require(role: str) -> Callable[..., Grant]:
    """A dependency: the caller's grant on the pipeline the path names (or on some pipeline, for routes without
    one), at least `role`."""

    def dependency(request: Request) -> Grant:
        console: Console = request.app.state.console
        token = _bearer(request)
        if token is None:
            raise _deny(request, 401, "no token: send 'Authorization: Bearer <token>'")
        name = request.path_params.get("name")
        if name is None:
            grants = [g for n in console.directories if (g := console.grant(n, token)) is not None]
            if not grants:
                raise _deny(request, 401, "unknown or revoked token")
            best = max(grants, key=lambda g: tokens.ROLES.index(g.role))
            if not best.allows(role):
                raise _deny(request, 403, f"role '{best.role}' may not do this; it needs '{role}'")
            return best
        console.path(name)
        grant = console.grant(name, token)
        if grant is None:
            if console.known(token):
                raise _deny(request, 403, f"this token has no access to pipeline '{name}'")
            raise _deny(request, 401, "unknown or revoked token")
        if not grant.allows(role):
            raise _deny(request, 403, f"role '{grant.role}' may not do this; it needs '{role}'")
        return grant

    return dependency


viewer, operator, admin = Depends(require("viewer")), Depends(require("operator")), Depends(require("admin"))


def error_status(err: BaseException) -> int:
    """The HTTP status of an engine error: what was asked cannot be done (400, 404 for what does not exist),
    the directory is busy (409), the storage failed (503)."""
    if isinstance(err, FileNotFoundError | LookupError):
        return 404
    if isinstance(err, Busy):
        return 409
    if isinstance(err, StorageFailure):
        return 503
    from sql.errors import SqlError

    if isinstance(err, UserError | SqlError):
        return 400
    return 500


def one_line(err: BaseException) -> str:
    from engine.damage import first_line

    return first_line(err)


def _error_response(request: Request, err: BaseException) -> JSONResponse:
    """`{"detail": one line}` with the status of the error; anything unexpected is a 500 whose one line is logged
    (with its traceback only when TIMELAPSE_DEBUG is set), never sent with a traceback."""
    status = error_status(err)
    if status == 500:
        if os.environ.get("TIMELAPSE_DEBUG"):
            LOG.exception("internal error on %s %s", request.method, request.url.path)
        else:
            LOG.error("internal error on %s %s: %s", request.method, request.url.path, one_line(err))
    detail = one_line(err) if status != 500 else f"internal error: {one_line(err)}"
    return JSONResponse({"detail": detail}, status)


def validation_message(err: RequestValidationError) -> str:
    """FastAPI's validation errors as one line: where, and what is wrong ("query offset: ...; body name: ...")."""
    parts = []
    for problem in err.errors():
        where = " ".join(str(p) for p in problem.get("loc", ()))
        parts.append(f"{where}: {problem.get('msg', 'invalid')}".strip(": "))
    return "; ".join(parts) or "invalid request"


def create_app(console: Console) -> FastAPI:
    from engine.console import actions, comparing, metrics, reads

    app = FastAPI(
        title="timelapse console",
        description="Watch pipelines, browse their state through time, take savepoints and roll back.",
        version="1",
        # FastAPI's Swagger UI page loads its scripts from a CDN: nothing here may be fetched from elsewhere
        docs_url=None,
        openapi_url="/api/openapi.json",
        redoc_url=None,
    )
    app.state.console = console
    app.include_router(reads.router, prefix="/api")
    app.include_router(actions.router, prefix="/api")
    app.include_router(comparing.router, prefix="/api")
    app.include_router(metrics.router)

    @app.exception_handler(EngineError)
    @app.exception_handler(FileNotFoundError)
    async def engine_error(request: Request, err: Exception) -> JSONResponse:
        return _error_response(request, err)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        """A malformed request is 400 with one line, as every other error (not FastAPI's 422 list)."""
        return JSONResponse({"detail": validation_message(err)}, 400)

    @app.middleware("http")
    async def timing(request: Request, call_next: Callable[[Request], Any]) -> Any:
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception as err:
            response = _error_response(request, err)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        response.headers.update(SECURITY_HEADERS)
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return response

    app.add_exception_handler(Exception, engine_error)  # errors raised outside the middleware (e.g. startup)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app
