"""A TCP proxy that can black-hole its traffic while keeping every socket open.

It forwards ``--listen`` to ``--target`` (a Redis). Told to ``block`` it silently discards what
flows in one direction (``up``: client -> Redis, ``down``: Redis -> client) or ``both``, without
closing or resetting anything: what a NAT timeout, a dead load balancer or a pulled cable looks like
to both ends. A connection that lost bytes stays dead after ``heal`` (its byte stream has a hole,
as a flow whose NAT entry expired); connections opened after ``heal`` forward normally.

Used in-process (``Blackhole(...).start()`` runs it in a thread) by the tests and the fault suite,
or as a script with a line-based control port::

    python -m benchmarks.blackhole --listen 16379 --target 127.0.0.1:6379 --control 16380
    echo "block both" | nc 127.0.0.1 16380   # or: block up | block down | heal | status
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
from dataclasses import dataclass, field

DIRECTIONS = {"up": {"up"}, "down": {"down"}, "both": {"up", "down"}}


@dataclass
class _Flow:
    dead: set[str] = field(default_factory=set)  # directions that lost bytes (for good)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


class Blackhole:
    """The proxy; ``start()`` serves it from a daemon thread, ``block``/``heal`` are thread-safe."""

    def __init__(self, target_port: int, listen_port: int = 0, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.listen_port = listen_port
        self.blocked: set[str] = set()
        self.flows: list[_Flow] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()

    # --- control (any thread) ---
    def block(self, direction: str = "both") -> None:
        with self._lock:
            self.blocked = set(DIRECTIONS[direction])

    def heal(self) -> None:
        with self._lock:
            self.blocked = set()

    def status(self) -> str:
        with self._lock:
            live = sum(1 for f in self.flows if not f.dead)
            return f"blocked={','.join(sorted(self.blocked)) or 'none'} flows={len(self.flows)} live={live}"

    # --- serving ---
    def start(self) -> Blackhole:
        threading.Thread(target=self._run_thread, name="blackhole", daemon=True).start()
        if not self._ready.wait(10):
            raise RuntimeError("the blackhole proxy did not start")
        return self

    def stop(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._close)

    def _run_thread(self) -> None:
        asyncio.run(self.serve())

    async def serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.listen_port)
        self.listen_port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._server.serve_forever()

    def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for flow in self.flows:
            for writer in flow.writers:
                writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        flow = _Flow(writers=[writer])
        with self._lock:
            self.flows.append(flow)
            flow.dead |= self.blocked  # a connection opened during a blackhole never gets through
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        flow.writers.append(up_writer)
        await asyncio.gather(self._pump(reader, up_writer, flow, "up"), self._pump(up_reader, writer, flow, "down"))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flow: _Flow, way: str) -> None:
        try:
            while data := await reader.read(65536):
                with self._lock:
                    if way in self.blocked:
                        flow.dead.add(way)
                    drop = way in flow.dead
                if drop:
                    continue  # discarded: the other end hears nothing, and nothing is closed
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:  # one end closed for real: pass that on (a blackhole never closes by itself)
            with contextlib.suppress(Exception):
                writer.close()


async def _control(proxy: Blackhole, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while line := (await reader.readline()).decode().strip():
        verb, _, arg = line.partition(" ")
        if verb == "block" and (arg or "both") in DIRECTIONS:
            proxy.block(arg or "both")
        elif verb == "heal":
            proxy.heal()
        elif verb != "status":
            writer.write(b"error: block [up|down|both] | heal | status\n")
            continue
        writer.write((proxy.status() + "\n").encode())
        await writer.drain()
    writer.close()


async def _main(args: argparse.Namespace) -> None:
    host, _, port = args.target.rpartition(":")
    proxy = Blackhole(int(port), args.listen, host or "127.0.0.1")
    control = await asyncio.start_server(lambda r, w: _control(proxy, r, w), "127.0.0.1", args.control)
    print(f"blackhole: 127.0.0.1:{args.listen} -> {args.target}; control on 127.0.0.1:{args.control}", flush=True)
    async with control:
        await proxy.serve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--target", required=True, help="host:port of the Redis to forward to")
    parser.add_argument("--control", type=int, required=True, help="port of the line-based control socket")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
