"""`vcdm serve`: a local web page for sampling and editing the runs given, over a small JSON API.

Starlette + uvicorn (the `web` extra). `create_app(runs, limits)` builds the app; vcdm.serve.models holds the
runs and their operations, vcdm.serve.jobs the per-run queue with progress, preview and cancellation.
"""

from vcdm.serve.app import Limits, create_app

__all__ = ["Limits", "create_app"]
