"""A TCP forwarder run as its own process: the tests kill it to cut a service off (a network
outage, as the client sees it) and start it again on the same port to bring the service back.

    python tests/api/tcp_proxy.py LISTEN_PORT TARGET_HOST TARGET_PORT
"""

from __future__ import annotations

import asyncio
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main(listen_port: int, host: str, port: int) -> None:
    async def forward(client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        try:
            target_reader, target = await asyncio.open_connection(host, port)
        except OSError:
            client.close()
            return
        await asyncio.gather(pipe(client_reader, target), pipe(target_reader, client))

    server = await asyncio.start_server(forward, "127.0.0.1", listen_port, reuse_address=True)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
