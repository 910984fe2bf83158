"""The python load generator's child process for the HTTP/REST port: aiohttp's client POSTing
one request body, in the closed or open loop of aio_load.py. ``axon bench --protocol
http-json,http-binary`` runs it (clients/loadgen.py ``run_python``) and reads its JSON.

A connection per caller (HTTP/1.1 answers one request at a time per connection); the answer is
read whole and its status checked, nothing more is parsed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
from typing import Any

import aiohttp

from axon.benchmarks.aio_load import CallFailedError, arguments, run_load
from axon.client.cli import security_from


def _ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not (args.tls or args.tls_ca or args.tls_cert):
        return None
    context = ssl.create_default_context(cafile=args.tls_ca)
    if args.tls_cert is not None:
        context.load_cert_chain(args.tls_cert, args.tls_key)
    return context


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    body = args.body.read_bytes()
    context = _ssl_context(args)
    scheme = "https" if context is not None else "http"
    url = f"{scheme}://{args.address}{args.method}"
    headers = dict(header.split(": ", 1) for header in args.header)
    token = security_from(args).token
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    callers = args.callers or args.max_outstanding
    connector = aiohttp.TCPConnector(limit=callers, ssl=context if context is not None else False)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def unary(request: bytes, timeout: float | None = None) -> bytes:
            try:
                async with session.post(url, data=request, timeout=aiohttp.ClientTimeout(
                        total=timeout), server_hostname=args.tls_server_name) as response:
                    answer = await response.read()
            except (aiohttp.ClientError, TimeoutError) as error:
                raise CallFailedError(type(error).__name__) from None
            if response.status != 200:
                raise CallFailedError(f"HTTP {response.status}")
            return answer

        await unary(body)  # connect before the clock starts
        return await run_load([unary], body, args)


def main() -> None:
    parser = arguments("aiohttp load of one HTTP request (used by bench)",
                       "the path to POST to, e.g. /v2/models/mnist/infer")
    parser.add_argument("--header", action="append", default=[], metavar="NAME: VALUE")
    args = parser.parse_args()
    args.out.write_text(json.dumps(asyncio.run(_run(args))))


if __name__ == "__main__":
    main()
