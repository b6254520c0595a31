"""A real server for the lab: HTTP on :80 answering its own name, and a line echo on
:9000 for long-lived connections. Stdlib asyncio only, so it starts fast under TCG.

Usage: realserver.py NAME [--http-port 80] [--echo-port 9000]
It can be told to misbehave through files in its state dir (for health-check tests):
  /run/hadirector-lab/NAME.fail  -> HTTP answers 500
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("name")
    p.add_argument("--http-port", type=int, default=80)
    p.add_argument("--echo-port", type=int, default=9000)
    p.add_argument("--state-dir", default="/run/hadirector-lab")
    a = p.parse_args()
    fail_flag = os.path.join(a.state_dir, f"{a.name}.fail")

    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            if os.path.exists(fail_flag):
                status, body = "500 Internal Server Error", b"failing\n"
            else:
                status, body = "200 OK", f"{a.name}\n".encode()
            writer.write(
                f"HTTP/1.0 {status}\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
            )
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(f"hello from {a.name}\n".encode())
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    servers = [
        await asyncio.start_server(http, "0.0.0.0", a.http_port, backlog=512),
        await asyncio.start_server(echo, "0.0.0.0", a.echo_port, backlog=512),
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"realserver {a.name} ready", flush=True)
    await stop.wait()
    for s in servers:
        s.close()


if __name__ == "__main__":
    asyncio.run(main())
