"""The console's commands: `timelapse ui` (the web console and its API) and `timelapse token` (its API tokens)."""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import sys
from typing import Any

from engine.cli_types import EXIT_OK, UsageError, storage_options

ROLES = ("viewer", "operator", "admin")


def _need_ui_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UsageError("the console needs the ui extra: pip install 'timelapse[ui]'") from None


def loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_ui(args: argparse.Namespace) -> int:
    _need_ui_extra()
    import uvicorn

    from engine.console.app import Console, create_app
    from engine.state_dir import StateDir

    console = Console.serving(args.dirs, storage_options(args))
    for name, path in console.directories.items():
        if not StateDir(path).manifest.exists():
            raise FileNotFoundError(f"{path} is not a timelapse state directory (pipeline '{name}')")
    url = f"http://{args.host if ':' not in args.host else f'[{args.host}]'}:{args.port}/"
    if console.tokens_configured():
        opened = url
        for name in unreachable(console):
            print(
                f"warning: pipeline '{name}' has no token, and no session token is made when others have tokens: "
                f"nobody can open it. Create one: timelapse token create --state {console.directories[name]} "
                "--name NAME --role viewer",
                file=sys.stderr,
            )
    elif not loopback(args.host):
        raise UsageError(
            f"refusing to serve on {args.host} without tokens: anyone who can reach it could roll your pipelines "
            "back. Create one with `timelapse token create --name NAME --role admin --state DIR`, or bind to "
            "127.0.0.1"
        )
    else:
        # No token configured: a token for this session only, in the URL's fragment (never sent to the server).
        opened = f"{url}#token={console.start_session()}"
    if not _port_free(args.host, args.port):
        raise UsageError(f"port {args.port} on {args.host} is in use; choose another with --port")
    names = ", ".join(console.directories)
    if args.json:
        print(json.dumps({"url": url, "open": opened, "pipelines": list(console.directories)}), flush=True)
    else:
        print(f"timelapse console for {names}: open {opened}  (Ctrl-C stops it)", file=sys.stderr, flush=True)
    uvicorn.run(create_app(console), host=args.host, port=args.port, log_level="warning", access_log=False)
    return EXIT_OK


def unreachable(console: Any) -> list[str]:
    """The served directories without a live token while others have some: no token can open them."""
    from engine.console import tokens

    return [name for name, path in console.directories.items() if not tokens.configured(path)]


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def cmd_token(args: argparse.Namespace) -> int:
    from engine.console import tokens

    result: Any
    if args.action == "create":
        if not args.name or not args.role:
            raise UsageError("token create needs --name and --role")
        token = tokens.create(args.state, args.name, args.role)
        result = {"name": args.name, "role": args.role, "token": token}
        message = (
            f"{token}\n(the token for '{args.name}' ({args.role}); it is shown once and only its hash is kept: "
            "store it now)"
        )
    elif args.action == "revoke":
        if not args.name:
            raise UsageError("token revoke needs --name")
        result = tokens.revoke(args.state, args.name)
        message = f"token '{args.name}' revoked"
    else:
        result = tokens.listing(args.state)
        message = (
            "\n".join(
                f"{r['name']:<24} {r['role']:<9} created {r['created_at'][:19]} by {r.get('created_by') or '?'}"
                + (f"  revoked {r['revoked_at'][:19]}" if r.get("revoked_at") else "")
                for r in result
            )
            or "no tokens"
        )
    print(json.dumps(result) if args.json else message)
    return EXIT_OK


def add_commands(commands: Any) -> list[argparse.ArgumentParser]:
    """Register `ui` and `token`; returns the parsers that take a state directory (for --storage-option)."""
    ui = commands.add_parser("ui", help="the web console: watch pipelines, browse state through time, roll back")
    ui.add_argument("dirs", nargs="+", metavar="DIR", help="state directories to serve (local or s3://...)")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=int, default=8080)
    ui.add_argument("--json", action="store_true", help="print the address as JSON on stdout when serving")
    ui.set_defaults(handler=cmd_ui)

    token = commands.add_parser("token", help="API tokens for the console: create, list, revoke")
    token.add_argument("action", choices=["create", "list", "revoke"])
    token.add_argument("--state", required=True, help="the state directory the token gives access to")
    token.add_argument("--name", help="who holds it: the audit records this name")
    token.add_argument("--role", choices=ROLES, help="viewer: read; operator: + savepoints, checkpoints; admin: all")
    token.add_argument("--json", action="store_true")
    token.set_defaults(handler=cmd_token)
    return [ui, token]
