"""The baseline of ``bench/bench_api_load.py``: a bare FastAPI "hello" route, served by uvicorn
with the settings ``connector api`` uses (no log config, no access log, proxy headers, no
server header, lifespan on).

    .venv/bin/python -m bench.bare_app --port 8123
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI

app = FastAPI()


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        server_header=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
