"""`vcdm serve RUN [RUN...]`: a local web page for sampling and editing (vcdm.serve; needs the `web` extra)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from vcdm.cli.common import add_verb
from vcdm.errors import VcdmError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_parser(sub: Any) -> None:
    p = add_verb(sub, "serve", "a local web page for sampling and editing runs",
                 "Serve one page (no build step, nothing from the internet) to sample the runs given, follow a "
                 "live preview, cancel, and edit results: variations, interpolation, upsampling, inversion, "
                 "SDEdit from a sketch, inpainting with a drawn mask. Every PNG it serves carries its parameters. "
                 "Needs the web extra: pip install 'vcdm[web]'.", epilog=None)  # fmt: skip
    p.add_argument("runs", metavar="RUN", nargs="+", help="run directories with trained stages")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine "
                   "only; anything else lets other machines use the server, with a warning)")  # fmt: skip
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument(
        "--max-images", type=int, default=64, metavar="N", help="images per job at most (default: 64)"
    )
    p.add_argument(
        "--max-steps", type=int, default=200, metavar="N", help="sampling steps at most (default: 200)"
    )
    p.add_argument("--max-upload-mb", type=float, default=4.0, metavar="MB",
                   help="request (upload) size at most, in MiB (default: 4)")  # fmt: skip
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    try:
        import uvicorn

        from vcdm.serve import Limits, create_app
    except ImportError as e:
        raise VcdmError(
            f"vcdm serve needs the web extra ({e.name} is missing): pip install 'vcdm[web]'"
        ) from None
    for name in ("max_images", "max_steps"):
        if getattr(args, name) < 1:
            raise VcdmError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0 < args.port < 65536:
        raise VcdmError(f"--port must be in [1, 65535], got {args.port}")
    limits = Limits(max_images=args.max_images, max_steps=args.max_steps,
                    max_upload_bytes=int(args.max_upload_mb * 2**20))  # fmt: skip
    app = create_app(args.runs, limits)
    if args.host not in LOCAL_HOSTS:
        print(f"vcdm serve: warning: listening on {args.host}: anyone who can reach this address can use the "
              "server (there is no authentication)", file=sys.stderr)  # fmt: skip
    print(f"vcdm serve: {', '.join(app.state.server.runs)} on http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
