"""A TCP proxy on 127.0.0.1 that delays every byte by DELAY_MS in each direction (a round trip
costs twice that; bandwidth is not limited): a registry on loopback made distant, for
scripts/bench-regcache-distant.

    python3 delay_proxy.py LISTEN_PORT UPSTREAM_PORT DELAY_MS
"""
import asyncio
import sys
import time

LISTEN, UPSTREAM, DELAY = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1000


async def pump(reader, writer):
    """Copies reader to writer, each chunk sent DELAY after it arrived."""
    queue = asyncio.Queue()

    async def send():
        while True:
            arrived, data = await queue.get()
            if data is None:
                break
            wait = arrived + DELAY - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        try:
            writer.write_eof()
        except OSError:
            pass

    sender = asyncio.create_task(send())
    try:
        while data := await reader.read(1 << 16):
            queue.put_nowait((time.monotonic(), data))
    except OSError:
        pass
    queue.put_nowait((time.monotonic(), None))
    try:
        await sender
    except OSError:
        pass


async def handle(client_reader, client_writer):
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", UPSTREAM)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(pump(client_reader, up_writer), pump(up_reader, client_writer))
    client_writer.close()
    up_writer.close()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", LISTEN)
    async with server:
        await server.serve_forever()


asyncio.run(main())
