"""Run the real gRPC server on a private event-loop thread (tests, demo, benchmarks).

    with EmbeddedServer(ServerConfig.of(db="x.db", port=0)) as server:
        client = DatastoreClient(server.address)
"""

from __future__ import annotations

import asyncio
import threading

from datastore_service.server import DatastoreServer, ServerConfig


class EmbeddedServer:
    def __init__(self, config: ServerConfig) -> None:
        self.server = DatastoreServer(config)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="sssd-embedded", daemon=True)
        self._stopping = threading.Lock()  # a second stop() waits for the first (it ran on a closed loop)
        self.address = ""

    def start(self) -> "EmbeddedServer":
        """Start the server; one that fails to start (a port in use, a busy datastore) raises
        with its loop thread ended and the loop closed (they were left running, one per try)."""
        self._thread.start()
        try:
            port = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result()
        except BaseException:
            self._end_loop()
            raise
        self.address = f"{self.server.config.host}:{port}"
        return self

    def call(self, coro, timeout_s: float | None = None):
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stop(self) -> None:
        """Shut the server down (once: later and concurrent calls return when it is down)."""
        with self._stopping:
            if self._thread.is_alive():
                self.call(self.server.stop())
                self._end_loop()

    def _end_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()

    def __enter__(self) -> "EmbeddedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
