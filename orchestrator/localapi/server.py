"""`orchestrator local-api`: the local API as an HTTP server on loopback (uvicorn)."""

from __future__ import annotations

import ipaddress
import logging

from orchestrator.errors import ConfigError
from orchestrator.localapi.app import ConnectionDropped, LocalAPI
from orchestrator.localapi.config import LocalAPIConfig

__all__ = ["is_loopback", "serve"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _QuietDrops(logging.Filter):
    """Injected dropped connections are on purpose; uvicorn need not print their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionDropped))


def serve(config: LocalAPIConfig, *, host: str, port: int, allow_remote: bool = False) -> None:
    """Serve until interrupted. Refuses a non-loopback address unless `allow_remote`."""
    if not is_loopback(host) and not allow_remote:
        msg = (f"--host {host} is not a loopback address; the local API has no real security "
               "(one shared key, simulated data). Add --allow-remote to serve it anyway")
        raise ConfigError(msg)
    import uvicorn  # noqa: PLC0415  (only this command needs it)

    logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
    api = LocalAPI(config)
    print(f"local Together-compatible API (training is SIMULATED) on http://{host}:{port}/v1\n"
          f"  data: {config.data_dir}\n  key: the setting local_api_key "
          "(export TOGETHER_API_KEY with it for the Together SDK or CLI)", flush=True)
    try:
        uvicorn.run(api.app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        api.close()
