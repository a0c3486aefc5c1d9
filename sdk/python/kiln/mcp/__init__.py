"""kiln-mcp: a Model Context Protocol server that gives an agent kiln sandboxes.

    kiln-mcp                          stdio (what desktop agents launch)
    kiln-mcp --http 127.0.0.1:8765    streamable HTTP at http://127.0.0.1:8765/mcp

It talks to kilnd through the SDK (``KILN_HOST``, ``KILN_TOKEN``). Each MCP
session's sandboxes are destroyed when the session ends. See docs/mcp.md.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from .protocol import LATEST, PROTOCOL_VERSIONS, RPCError, Server, Session
from .tools import Config, Tools

__all__ = ["main", "make_server", "Server", "Session", "Tools", "Config", "RPCError",
           "PROTOCOL_VERSIONS", "LATEST"]

INSTRUCTIONS = (
    "kiln gives you Linux sandboxes: each is a fresh microVM with its own kernel, destroyed "
    "when this session ends. Use sandbox_create once, then run_command, write_file, "
    "read_file and list_files with its id for as many steps as you need; sandbox_kill it when "
    "done. run_code runs a snippet in a throwaway sandbox. Sandboxes have no network unless "
    "sandbox_create's `allow` names hosts."
)


def make_server(config: Optional[Config] = None) -> Server:
    from .. import __version__
    return Server(Tools(config), version=__version__, instructions=INSTRUCTIONS)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="kiln-mcp",
        description="MCP server for kiln sandboxes (stdio by default). kilnd is found through "
                    "KILN_HOST (default unix:/run/kiln/kilnd.sock) and KILN_TOKEN.")
    p.add_argument("--http", metavar="[HOST:]PORT",
                   help="serve streamable HTTP instead of stdio (HOST defaults to 127.0.0.1)")
    p.add_argument("--path", default="/mcp", help="the HTTP endpoint (default /mcp)")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="an Origin allowed besides local pages' (repeatable)")
    p.add_argument("--session-idle", type=float, default=3600, metavar="S",
                   help="an HTTP session unused for S seconds ends (default 3600)")
    p.add_argument("--image", default="debian", help="sandbox_create's default image (debian)")
    p.add_argument("--code-image", help="run_code's image (default: --image)")
    p.add_argument("--max-sandboxes", type=int, default=4, metavar="N",
                   help="sandboxes per session at most (4)")
    p.add_argument("--sandbox-timeout", type=int, default=1800, metavar="S",
                   help="seconds a sandbox lives unless sandbox_create says otherwise (1800)")
    p.add_argument("--max-command-timeout", type=int, default=600, metavar="S",
                   help="the longest timeout_s a command may ask for (600)")
    p.add_argument("--output-cap", type=int, default=64 * 1024, metavar="BYTES",
                   help="output in one tool result at most (65536)")
    p.add_argument("--verbose", action="store_true", help="log each HTTP request to stderr")
    a = p.parse_args(argv)
    if a.max_sandboxes < 1 or a.sandbox_timeout < 1 or a.max_command_timeout < 1 \
            or a.output_cap < 1024:
        p.error("--max-sandboxes, --sandbox-timeout and --max-command-timeout must be positive; "
                "--output-cap at least 1024")
    cfg = Config(image=a.image, code_image=a.code_image, max_sandboxes=a.max_sandboxes,
                 sandbox_timeout=a.sandbox_timeout, max_command_timeout=a.max_command_timeout,
                 output_cap=a.output_cap)
    server = make_server(cfg)
    from .transports import serve_http, serve_stdio
    if a.http:
        try:
            return serve_http(server, a.http, path=a.path, allowed_origins=a.allow_origin,
                              session_idle=a.session_idle, verbose=a.verbose)
        except (ValueError, OSError) as e:
            print(f"kiln-mcp: {e}", file=sys.stderr)
            return 2
    return serve_stdio(server)
