"""The web view: runs, a run's graph and loss curves, a batch's grid, the model registry.

`app.create_app(store)` is the ASGI app (server-rendered pages and the JSON API they come
from); `server.serve` runs it on loopback for `orchestrator ui`.
"""
