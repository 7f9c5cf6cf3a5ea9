"""`orchestrator local-api`: the local API as an HTTP server on loopback (uvicorn).

Everything that can stop it from serving is found before it says it serves, each as one line:
an empty key, a port outside 1-65535 or already taken, a data folder it cannot write. Once it
serves, a client that opens a connection and sends its request's headers slowly, or never,
is disconnected after `request_timeout` (uvicorn alone would wait for ever: slowloris); bodies
are bounded by the app's gate.
"""

from __future__ import annotations

import logging
from typing import Any

from orchestrator.errors import ConfigError
from orchestrator.localapi.app import LocalAPI
from orchestrator.localapi.config import LocalAPIConfig
from orchestrator.localapi.errors import ConnectionDropped
from orchestrator.serving import TimelyH11, is_loopback, listen

__all__ = ["serve"]


class _QuietDrops(logging.Filter):
    """Injected dropped connections are on purpose; uvicorn need not print their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionDropped))


def _check(config: LocalAPIConfig, host: str, port: int, allow_remote: bool) -> LocalAPI:
    """The API, with its state opened: each reason it could not serve is a ConfigError."""
    if not is_loopback(host) and not allow_remote:
        msg = (f"--host {host} is not a loopback address; the local API has no real security "
               "(one shared key, simulated data). Add --allow-remote to serve it anyway")
        raise ConfigError(msg)
    if not 1 <= port <= 65535:
        msg = f"--port {port}: a port is a number from 1 to 65535"
        raise ConfigError(msg)
    if not config.api_key.strip():
        msg = "local_api_key is empty: clients could not authenticate (the default is local-key)"
        raise ConfigError(msg)
    api = LocalAPI(config)
    try:
        api.check_state()
    except BaseException:
        api.close()
        raise
    return api


def serve(config: LocalAPIConfig, *, host: str, port: int, allow_remote: bool = False) -> None:
    """Serve until interrupted; raises ConfigError, before serving, for anything that would
    keep it from serving (see the module docstring)."""
    api = _check(config, host, port, allow_remote)
    try:
        sock = listen(host, port)
    except BaseException:
        api.close()
        raise
    import uvicorn  # noqa: PLC0415  (only this command needs it)

    logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
    protocol: Any = type("TimelyH11", (TimelyH11,), {"header_timeout": config.request_timeout})
    training = ("REAL: LoRA with peft, a trainer process on this machine"
                if config.trainer == "peft" else "SIMULATED")
    print(f"local Together-compatible API (training is {training}) on http://{host}:{port}/v1\n"
          f"  data: {config.data_dir}\n  key: the setting local_api_key "
          "(export TOGETHER_API_KEY with it for the Together SDK or CLI)", flush=True)
    server = uvicorn.Server(uvicorn.Config(api.app, log_level="warning", access_log=False,
                                           http=protocol, timeout_keep_alive=5))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        api.close()

