"""The API served by uvicorn on a background thread: real HTTP, for browsers and the demo."""

from __future__ import annotations

import threading
import time

import uvicorn

from connector_api.app import create_app
from connector_api.settings import ApiSettings
from connector_common.telemetry import setup_telemetry


class ServedApi:
    """The API in uvicorn on a background thread (real HTTP, as a browser needs)."""

    def __init__(self, settings: ApiSettings, port: int) -> None:
        telemetry = setup_telemetry(settings.otel, "api-browser-test", set_global=False)
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                create_app(settings, telemetry=telemetry),
                host="127.0.0.1",
                port=port,
                log_config=None,
                access_log=False,
                lifespan="on",
            )
        )
        self.thread = threading.Thread(target=self.server.run, name="api", daemon=True)

    def __enter__(self) -> ServedApi:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API did not start")
            time.sleep(0.01)  # polling a flag with a deadline
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)
