"""The server object: owns the gRPC server, the datastore, maintenance and metrics.

Start-up: bind, serve health NOT_SERVING, load the snapshot in a thread, then SERVING (a read
replica, ``--follow``: once its first copy of the writer is in; see replication.py).
Shutdown (``stop``), in this order: health NOT_SERVING; stop accepting calls and drain the
in-flight ones for ``grace_s``; stop maintenance; final snapshot and close of the SQLite file;
stop the metrics endpoint.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import logging
import math
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from datastore_service.auth import Authenticator, warn_if_others_read
from datastore_service.core.index import warm_up
from datastore_service.datastore import Datastore, DatastoreConfig
from datastore_service.interceptors import GuardInterceptor
from datastore_service.metrics import Metrics
from datastore_service.rates import reload_rates
from datastore_service.replication import ChangeLog, Follower
from datastore_service.servicer import DatastoreServicer, Limits
from datastore_service.store import make_directory
from sssd_wire import settings
from sssd_wire.v1 import datastore_pb2, datastore_pb2_grpc

log = logging.getLogger("sssd.server")
SERVICE_NAME = datastore_pb2.DESCRIPTOR.services_by_name["Datastore"].full_name


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """Knobs of ``sssd serve``: the network side here, the datastore's and the per-request
    limits in their own dataclasses (flags and ``SSSD_*`` variables derive from the tree, see
    sssd_wire.settings)."""

    host: str = "127.0.0.1"  # bind address; loopback unless told otherwise
    port: int = 50051  # 0 picks a free port
    metrics_port: int = -1  # Prometheus /metrics port; -1 = off, 0 = any free port
    metrics_host: str = "127.0.0.1"  # /metrics bind address (unauthenticated: loopback unless told otherwise)
    metrics_namespaces: bool = False  # per-namespace series (names and sizes of every tenant) on /metrics
    auth_file: str = ""  # JSON bearer tokens with scopes (see datastore_service/auth.py); empty = open
    tls_cert: str = ""  # PEM certificate chain; with tls_key enables TLS
    tls_key: str = ""  # PEM private key
    max_message_bytes: int = 64 << 20  # gRPC message size limit, both directions
    grace_s: float = 10.0  # drain time for in-flight calls at shutdown
    workers: int = 0  # threads for lookups and commits (the kernels release the GIL); 0 = one per core, at least 2
    # a writer's address: serve as its read replica (lookups; writes are refused and go to the
    # writer), keeping --db a copy of the writer's content
    follow: str = ""
    # bearer token with admin scope on the writer (prefer SSSD_FOLLOW_TOKEN to the flag)
    follow_token: str = dataclasses.field(default="", repr=False)
    follow_tls_ca: str = ""  # PEM CA of the writer's certificate, when it serves TLS
    # tokens of recent changes a writer keeps for replicas that reconnect (further behind: a full
    # copy); 0 = no replicas can follow this writer
    replication_log_tokens: int = 4 << 20
    # shut down (as on SIGTERM) once this process is no longer the server's parent: a child
    # server (sssd.serve_process) does not outlive a benchmark or test that crashed; 0 = never
    parent_pid: int = 0
    limits: Limits = Limits()
    datastore: DatastoreConfig = DatastoreConfig()

    def __post_init__(self) -> None:
        checks = [
            (0 <= self.port <= 65535, f"--port {self.port} must be in 0..65535 (0 picks a free port)"),
            (-1 <= self.metrics_port <= 65535, f"--metrics-port {self.metrics_port} must be -1 (off) or 0..65535"),
            (self.metrics_port <= 0 or self.metrics_port != self.port,  # (failed with "[Errno 98]" alone)
             f"--metrics-port {self.metrics_port} is also --port: /metrics needs a port of its own"),
            (1 << 16 <= self.max_message_bytes < 1 << 31,  # (past gRPC's C int: an OverflowError traceback)
             f"--max-message-bytes {self.max_message_bytes} must be in 65536..2147483647"),
            (0 <= self.grace_s < math.inf, f"--grace-s {self.grace_s} must be a finite number >= 0"),
            (self.workers >= 0, f"--workers {self.workers} must be 0 (one per core) or more"),
            (self.replication_log_tokens >= 0, f"--replication-log-tokens {self.replication_log_tokens} must be >= 0"),
            (self.parent_pid >= 0, f"--parent-pid {self.parent_pid} must be a process id, or 0 (none)"),
            (bool(self.tls_cert) == bool(self.tls_key), "--tls-cert and --tls-key go together: give both or neither"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.follow:
            settings.check_address(self.follow, "--follow", tls=bool(self.follow_tls_ca))
            if settings.dials_itself(self.follow, self.host, self.port):
                raise ValueError(f"--follow {self.follow} is this server's own address (--host {self.host} --port "
                                 f"{self.port}): a replica follows its writer, another server")
            settings.bearer_metadata(self.follow_token, "--follow-token")
            if self.follow_tls_ca:  # (read at each reconnection: a bad one failed there, again and again)
                settings.tls_ca_bytes(self.follow_tls_ca, "--follow-tls-ca")

    @classmethod
    def of(cls, **knobs) -> "ServerConfig":
        """Any knob of the tree by its name: ``ServerConfig.of(db="x.db", port=0)``."""
        return settings.build(cls, **knobs)


def rates_said(limits, own: int) -> str:
    """The namespaces' rates, for the start-up line ("" when there are none)."""
    said = ""
    if limits.namespace_lookup_rate:
        said += f"; lookups at most {limits.namespace_lookup_rate:g} contexts/s per namespace"
    if limits.namespace_ingest_rate:
        said += f"; ingests at most {limits.namespace_ingest_rate:g} tokens/s per namespace"
    if limits.namespace_rates_file:
        said += f"; own rates for {own} namespace{'' if own == 1 else 's'} ({limits.namespace_rates_file})"
    return said


def holdings(stats, existed: bool) -> str:
    """What a writer's file held when it opened, for its start-up line: "a new, empty file" (none
    was at the path), "no namespaces yet", or the namespaces, documents and tokens it holds."""
    if not existed:
        return "a new, empty file"
    if not stats:
        return "no namespaces yet"
    counts = {"namespace": len(stats), "document": sum(s.counts.documents for s in stats),
              "token": sum(s.counts.tokens for s in stats)}
    return ", ".join(f"{n:,} {word}{'' if n == 1 else 's'}" for word, n in counts.items())


class DatastoreServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = Metrics(config.metrics_namespaces)
        self.auth = Authenticator.from_file(config.auth_file or None)
        # the TLS pair last read (at start, then at each SIGHUP) and the one handshakes were last given
        self._pair = self._pair_given = None
        threads = config.workers or max(2, len(os.sched_getaffinity(0)))
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="sssd-worker")
        self.maint_pool = ThreadPoolExecutor(1, thread_name_prefix="sssd-maintenance")
        self.servicer = DatastoreServicer(config.limits, self.metrics, self.pool)
        self.servicer.max_answer_bytes = config.max_message_bytes
        self.health = health.aio.HealthServicer()
        self.port = 0
        self.metrics_port = 0
        self._server: grpc.aio.Server | None = None
        self._metrics_httpd = None
        self.follower: Follower | None = None

    async def start(self) -> int:
        """Bind and start serving; returns the bound port. Loads the snapshot before SERVING."""
        c = self.config
        options = [
            ("grpc.max_receive_message_length", c.max_message_bytes),
            ("grpc.max_send_message_length", c.max_message_bytes),
            ("grpc.so_reuseport", 0),  # a busy port is an error, not a second server sharing it
        ]
        server = grpc.aio.server(interceptors=[GuardInterceptor(self.auth, self.metrics)], options=options)
        self._server = server
        datastore_pb2_grpc.add_DatastoreServicer_to_server(self.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection([SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        self.port = self._bind(server)
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.start()
        if not self.auth.enabled and c.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("serving on %s without an auth file: anyone who can reach it may ingest and administer", c.host)
        if c.follow and c.datastore.segment_dir and not c.datastore.write_segments:
            if c.datastore.db != DatastoreConfig.db:
                log.warning("--db %s is not used: a segment reader keeps no file of its own", c.datastore.db)
        else:
            make_directory(Path(c.datastore.db).parent, f"--db {c.datastore.db}")
        existed = Path(c.datastore.db).exists()  # a new file at a mistyped path shows in the start-up line
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.maint_pool, warm_up)  # kernels compiled before SERVING
        if c.follow:
            # a replica that writes segment files logs its changes for the segment readers that follow it
            changes = ChangeLog(c.replication_log_tokens) if c.datastore.write_segments else None
            ds = await loop.run_in_executor(self.maint_pool, functools.partial(Datastore, c.datastore, changes,
                                                                                 mirror=True))
        else:
            changes = ChangeLog(c.replication_log_tokens) if c.replication_log_tokens else None
            ds = await loop.run_in_executor(self.maint_pool, Datastore, c.datastore, changes)
        ds.on_compaction = self.metrics.compactions.inc
        self.metrics.source = ds.stats
        self.metrics.datastore = ds
        ds.start_maintenance()
        self.servicer.ds = ds
        if c.metrics_port >= 0:
            self.metrics.watch_gc()
            try:
                self._metrics_httpd, _ = start_http_server(c.metrics_port, addr=c.metrics_host,
                                                           registry=self.metrics.registry)
            except OSError as exc:  # taken since it was checked: named, not "[Errno 98]" alone
                raise OSError(f"cannot listen on {c.metrics_host}:{c.metrics_port} (--metrics-port): "
                              f"{(exc.strerror or str(exc)).lower()}") from None
            self.metrics_port = self._metrics_httpd.server_port
        if c.follow:
            role = f"{'segment reader' if ds.segment_reader else 'read replica'} of {c.follow}"
            role += ", writing segment files for readers" if ds.files is not None else ""
            role += f", db {c.datastore.db}"
        else:  # what it holds: a wrong --db path shows as a new, empty file
            role = f"writer, db {c.datastore.db}: {holdings(ds.stats(), existed)}; " + (
                f"at most {ds.live_token_cap:,} live tokens" if ds.live_token_cap else "no cap on live tokens")
        role += rates_said(c.limits, len(self.servicer.rates.own) if self.servicer.rates is not None else 0)
        if c.follow:  # SERVING once the first full copy is in (a readiness probe waits for it)
            self.servicer.writer = c.follow
            self.follower = Follower(c.follow, c.follow_token, ds, self.servicer._run, self._caught_up, c.follow_tls_ca)
            self.metrics.follower = self.follower
            self.follower.start()
        else:
            await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info("sssd datastore serving on %s:%d (%s, auth %s, tls %s)", c.host, self.port, role,
                 "on" if self.auth.enabled else "off", "on" if c.tls_cert else "off")
        return self.port

    async def _caught_up(self) -> None:
        await self.servicer._run(self.servicer.ds.flush)  # the copy queryable before SERVING
        log.info("caught up with the writer %s: SERVING", self.config.follow)
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)

    def _bind(self, server: grpc.aio.Server) -> int:
        c = self.config
        address = f"{c.host}:{c.port}"
        _check_free(c.host, c.port)  # gRPC's own refusal (so_reuseport off) also logs a C-core line
        if c.metrics_port > 0:  # (found busy only after the datastore loaded, and named by errno alone)
            _check_free(c.metrics_host, c.metrics_port, "--metrics-port")
        try:
            if c.tls_cert or c.tls_key:  # the pair a new connection gets is asked for at its handshake
                pair = grpc.ssl_server_certificate_configuration([_tls_pair(c.tls_cert, c.tls_key)])
                self._pair = self._pair_given = pair
                port = server.add_secure_port(address, grpc.dynamic_ssl_server_credentials(pair, self._next_pair))
            else:
                port = server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc: "Failed to bind to address ..."
            raise OSError(f"cannot listen on {address}: the port is in use or the address is not this host's") from exc
        if port == 0:
            raise OSError(f"cannot listen on {address}: the port is in use or the address is not this host's")
        return port

    def reload(self) -> None:
        """SIGHUP: read --auth-file, the --tls-cert/--tls-key pair and --namespace-rates-file again,
        without a restart.

        Tokens: revoked or added; a stream already open (a replica's Follow, a LookupStream) is
        checked again at its next message, and a revoked token's ends as UNAUTHENTICATED
        (interceptors). Certificate: a renewed one, taken by every new connection from then on
        (open ones keep theirs). A file that does not load is said in the log, and what was in
        force before it stays."""
        c = self.config
        path = c.limits.namespace_rates_file
        if not (c.auth_file or c.tls_cert or path):
            log.info("SIGHUP: nothing to reload (no --auth-file, no --tls-cert, no --namespace-rates-file)")
        if path:
            try:
                log.info("SIGHUP: namespace rates file %s reloaded: its rates for %d namespace(s) in force", path,
                         reload_rates(path, self.servicer.rates, self.servicer.ingest_rates))
            except ValueError as exc:
                log.error("SIGHUP: namespace rates file not reloaded, the rates before stay in force: %s", exc)
        if c.auth_file:
            try:
                log.info("SIGHUP: auth file %s reloaded: %d tokens", c.auth_file, self.auth.reload(c.auth_file))
            except ValueError as exc:
                log.error("SIGHUP: auth file not reloaded, the tokens before stay in force: %s", exc)
        if c.tls_cert:
            try:
                self._pair = grpc.ssl_server_certificate_configuration([_tls_pair(c.tls_cert, c.tls_key)])
                log.info("SIGHUP: TLS certificate %s reloaded: new connections get it", c.tls_cert)
            except (OSError, ValueError) as exc:
                log.error("SIGHUP: TLS certificate not reloaded, the one before stays in use: %s", exc)

    def _next_pair(self):
        """gRPC asks at each handshake (on its own threads): the pair a reload read, when handshakes
        were not given it yet, else None (keep the one in use). No swap to lose a reload's pair in:
        two handshakes at once may both be given it, which costs nothing."""
        pair = self._pair
        if pair is self._pair_given:
            return None
        self._pair_given = pair
        return pair

    async def _set_health(self, status) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def stop(self, quiet: bool = False) -> None:
        """Graceful shutdown in a fixed order (see the module docstring); ``quiet`` after a
        failed start, whose one error line is the operator's whole story."""
        say = log.debug if quiet else log.info
        say("shutdown: health NOT_SERVING")
        await self.health.enter_graceful_shutdown()  # every service NOT_SERVING, later sets ignored
        if self.follower is not None:
            await self.follower.stop()
        self.servicer.stopping.set()  # replicas' Follow streams end instead of holding the drain
        if self._server is not None:
            say("shutdown: draining in-flight calls (grace %.1fs)", self.config.grace_s)
            await self._server.stop(self.config.grace_s)
        if self.servicer.ds is not None:
            say("shutdown: stopping maintenance, final snapshot and close of %s", self.config.datastore.db)
            await asyncio.get_running_loop().run_in_executor(self.maint_pool, self.servicer.ds.close)
            self.servicer.ds = None
        if self._metrics_httpd is not None:
            self.metrics.watch_gc(False)
            self._metrics_httpd.shutdown()
        self.pool.shutdown(wait=True)
        self.maint_pool.shutdown(wait=True)
        say("shutdown: done")


def _tls_pair(cert: str, key: str) -> tuple[bytes, bytes]:
    """(key, cert) PEM bytes, checked first: gRPC's own refusal of a bad pair reads like a busy port."""
    import ssl

    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not Path(path).is_file():
            raise OSError(f"{flag} {path}: no such file")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise ValueError(f"--tls-cert {cert} and --tls-key {key} are not a PEM certificate chain and its private key "
                         f"({exc.reason or 'unreadable PEM'})") from None
    warn_if_others_read(key, "--tls-key")
    return Path(key).read_bytes(), Path(cert).read_bytes()


def _check_free(host: str, port: int, what: str = "") -> None:
    """A one-line OSError when ``host:port`` cannot be listened on (``what``: which flag's)."""
    import socket

    where = f"{host}:{port}{f' ({what})' if what else ''}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(f"cannot listen on {where}: {exc.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does: TIME_WAIT is no obstacle
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            raise OSError(f"cannot listen on {where}: {exc.strerror.lower()}") from None


async def serve(config: ServerConfig) -> None:
    """Run until SIGTERM or SIGINT (or, with ``parent_pid``, the parent's exit), then shut down gracefully."""
    server = DatastoreServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, server.reload)  # (its default ended the server)
    try:
        await server.start()
    except BaseException:
        await server.stop(quiet=True)  # a failed start leaves nothing behind (no spurious shutdown tracebacks)
        raise
    server.metrics.gc_frozen.set(freeze_heap())
    print(f"listening on {config.host}:{server.port}", flush=True)
    watch = asyncio.create_task(_watch_parent(config.parent_pid, stop)) if config.parent_pid else None
    await stop.wait()
    if watch is not None:
        watch.cancel()
    await server.stop()


def freeze_heap() -> int:
    """Leave what start-up built (imports, compiled kernels, the loaded datastore) out of every
    later garbage collection: a full collection of this heap stops every thread of the server,
    lookups included, for tens of milliseconds (67-191 ms of pauses in one 10 s row of the fleet
    bench on a 2-core box, 4-5 ms frozen: BENCHMARKS.md); frozen, it scans only what serving
    allocated since. Objects frozen here are still freed when their last reference goes;
    only a reference cycle among them would stay. For the ``sssd serve`` process, not a server
    embedded in someone else's (tests, the demo)."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("garbage collector: %d start-up objects frozen", frozen)
    return frozen


async def _watch_parent(parent_pid: int, stop: asyncio.Event, every_s: float = 0.5) -> None:
    """Set ``stop`` once ``parent_pid`` is no longer this process's parent (it exited, however:
    an orphan is adopted by another process)."""
    while os.getppid() == parent_pid:
        await asyncio.sleep(every_s)
    log.warning("parent process %d is gone: shutting down", parent_pid)
    stop.set()
