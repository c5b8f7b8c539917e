"""What a bare Python gRPC server spends per call, with no work in its handler: the floor under
the datastore service's per-call overhead (issue 17's "service within ~20 % of in process").

A server process answers every call with a fixed response of ``--response-bytes`` and does
nothing else; ``--clients`` client processes each send one ``--request-bytes`` call every
1 / ``--rate`` s for ``--seconds``. Rows: a grpc.aio server with unary calls, the same server
with one bidirectional stream per client (a message each way per call, as ``LookupStream``),
and grpc's thread-pool server with unary calls; and the aio server with unary calls from a
client that makes them as the SDK does (``aio-unary-loop``: a grpc.aio channel on a long-lived
asyncio loop thread, each call handed to it from the caller's thread, ``remote.LoopLookups``), or
(``aio-unary-thread``) as a lookup thread would that makes blocking calls on a sync channel, each
handed to it through a queue.
Server CPU is utime + stime of the server process over the measured window (from /proc), so
it does not depend on how the cores are shared with the clients; client CPU is each client
process's own (``time.process_time`` over its calls). The defaults are the fleet bench's: 128
contexts of 16 tokens per call, 50 calls/s per worker.

    .venv/bin/python bench/grpc_floor.py [--clients 1,4] [--rate 50] [--seconds 10] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import grpc

from sssd.bench.stats import process_cpu_seconds

SERVICE = "floor.Floor"
KINDS = ("aio-unary", "aio-stream", "sync-unary", "aio-unary-loop", "aio-unary-thread")


def _handlers(response: bytes, aio: bool):
    if aio:
        async def unary(request, context):
            return response

        async def stream(requests, context):
            async for _ in requests:
                yield response
    else:
        def unary(request, context):
            return response

        def stream(requests, context):
            for _ in requests:
                yield response
    return grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.stream_stream_rpc_method_handler(stream),
    })


def _serve(kind: str, response_bytes: int, ports) -> None:
    response = b"\x01" * response_bytes
    if kind.startswith("sync"):
        server = grpc.server(ThreadPoolExecutor(max(2, os.cpu_count() or 2)))
        server.add_generic_rpc_handlers((_handlers(response, aio=False),))
        ports.put(server.add_insecure_port("127.0.0.1:0"))
        server.start()
        server.wait_for_termination()
        return

    async def main() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((_handlers(response, aio=True),))
        ports.put(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def _loop_caller(port: int):
    """(send, close): unary calls on a grpc.aio channel owned by a loop thread, as the SDK makes them."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def open_channel():
        return grpc.aio.insecure_channel(f"127.0.0.1:{port}")

    channel = asyncio.run_coroutine_threadsafe(open_channel(), loop).result()
    unary = channel.unary_unary(f"/{SERVICE}/Unary")

    def close():
        asyncio.run_coroutine_threadsafe(channel.close(), loop).result(timeout=5.0)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5.0)

    async def call(request):
        return await unary(request)

    return lambda request: asyncio.run_coroutine_threadsafe(call(request), loop).result(), close


def _thread_caller(port: int):
    """(send, close): blocking unary calls on a sync channel made by one thread, each handed to it
    through a queue and its answer (or its error) handed back in a future."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    unary = channel.unary_unary(f"/{SERVICE}/Unary")
    inbox: queue.SimpleQueue = queue.SimpleQueue()

    def serve() -> None:
        while (item := inbox.get()) is not None:
            fut, request = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(unary(request))
            except grpc.RpcError as exc:  # the caller's result() raises it: the client process fails
                fut.set_exception(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def send(request):
        fut: Future = Future()
        inbox.put((fut, request))
        return fut.result()

    def close():
        inbox.put(None)
        thread.join(timeout=5.0)
        channel.close()

    return send, close


def _client(port: int, kind: str, request_bytes: int, rate: float, calls: int, cpu=None) -> None:
    """``calls`` calls at ``rate``; the process's CPU over them goes to the queue ``cpu`` if given."""
    request = b"\x02" * request_bytes
    if kind in ("aio-unary-loop", "aio-unary-thread"):
        send, close = (_loop_caller if kind == "aio-unary-loop" else _thread_caller)(port)
        try:
            _pace(lambda: send(request), rate, calls, cpu)
        finally:
            close()
        return
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        if kind.endswith("stream"):
            outbox: list[bytes] = []
            ready = threading.Semaphore(0)

            def messages():
                for _ in range(calls):
                    ready.acquire()
                    yield outbox.pop()

            answers = channel.stream_stream(f"/{SERVICE}/Stream")(messages())
            send = lambda: (outbox.append(request), ready.release(), next(answers))  # noqa: E731
        else:
            unary = channel.unary_unary(f"/{SERVICE}/Unary")
            send = lambda: unary(request)  # noqa: E731
        _pace(send, rate, calls, cpu)


def _pace(send, rate: float, calls: int, cpu) -> None:
    """``send()`` ``calls`` times, ``rate`` a second; the process's CPU over them put on ``cpu`` (a queue, or None)."""
    due, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(calls):
        send()
        due += 1 / rate
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
    if cpu is not None:
        cpu.put(time.process_time() - cpu0)


def measure(kind: str, clients: int, rate: float, seconds: float, request_bytes: int, response_bytes: int) -> dict:
    ctx = mp.get_context("spawn")  # no gRPC state inherited across a fork
    ports = ctx.Queue()
    server = ctx.Process(target=_serve, args=(kind, response_bytes, ports), daemon=True)
    server.start()
    try:
        port = ports.get(timeout=60)
        warm = ctx.Process(target=_client, args=(port, kind, request_bytes, rate, int(rate)))
        warm.start()
        warm.join()
        calls = int(rate * seconds)
        spent = ctx.Queue()
        procs = [ctx.Process(target=_client, args=(port, kind, request_bytes, rate, calls, spent))
                 for _ in range(clients)]
        cpu0, t0 = process_cpu_seconds(server.pid), time.perf_counter()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        cpu1, wall = process_cpu_seconds(server.pid), time.perf_counter() - t0
        if any(p.exitcode for p in procs):
            raise RuntimeError(f"a {kind} client failed")
        client_cpu = sum(spent.get(timeout=10) for _ in procs)  # one float each: in the pipe by now
    finally:
        server.kill()
        server.join()
    total = clients * calls
    return {"server": kind, "clients": clients, "rate_per_client": rate, "request_bytes": request_bytes,
            "response_bytes": response_bytes, "calls": total, "calls_per_s": round(total / wall),
            "server_cpu_us_per_call": round((cpu1 - cpu0) / total * 1e6, 1),
            "client_cpu_us_per_call": round(client_cpu / total * 1e6, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="1,4", help="client processes, one row per count")
    ap.add_argument("--rate", type=float, default=50.0, help="calls per second per client")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured time per row")
    ap.add_argument("--request-bytes", type=int, default=2_200,
                    help="the fleet bench's Lookup: 128 contexts x 4 tokens")
    ap.add_argument("--response-bytes", type=int, default=38_000, help="the fleet bench's answer: 128 tries of depth 9")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"servers and RPC kinds, of {', '.join(KINDS)}")
    ap.add_argument("--json", action="store_true", help="one line of JSON")
    args = ap.parse_args()
    kinds = args.kinds.split(",")
    if not set(kinds) <= set(KINDS):
        ap.error(f"--kinds: each of {', '.join(KINDS)}")
    rows = [measure(kind, int(n), args.rate, args.seconds, args.request_bytes, args.response_bytes)
            for n in args.clients.split(",") for kind in kinds]
    from sssd.bench.provenance import stamped

    print(json.dumps(stamped({"rows": rows}), indent=None if args.json else 1))


if __name__ == "__main__":
    main()
