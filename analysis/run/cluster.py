"""Ray, kept in one place: connect to a cluster (or start a local one on the loopback address) and run
a function over a list of inputs as Ray tasks.

Ray is optional (``pip install '.[ray]'``); nothing here imports it until it is asked for, and
without it every entry point raises :class:`~analysis.core.errors.ConfigError` saying how to install it.

API (everything else in this module is private):

``connect(address=None, *, num_cpus=None, num_gpus=None) -> Connection``
    ``address`` None (or ``"local"``): start a private Ray instance in this machine, every process
    bound to 127.0.0.1, no dashboard, usage reporting off; ``num_cpus``/``num_gpus`` size it (Ray's
    detection when None). ``"auto"``: the cluster a ``ray start`` on this machine runs.
    ``"ray://host:port"``: a remote cluster's Ray Client server (10001 by default).
    ``"host:port"``: a cluster's GCS address, for a driver running on one of its nodes. When Ray is
    already initialised in this process the connection reuses it (an explicit address must still
    answer). The :class:`Connection` is a
    context manager; ``close()`` shuts down only an instance this call started.
``map_tasks(fn, items, *, num_cpus=1, num_gpus=0, threads=1, max_retries=3, on_result=None) -> list``
    ``[fn(item) for item in items]``, each call a Ray task asking for ``num_cpus`` CPUs and
    ``num_gpus`` GPUs (:func:`task_resources` gives both for a torch device), results in the order of
    ``items``. ``fn`` must be a module-level (picklable) function; it is put in the object store once.
    ``threads`` sets torch's thread count in the task (None leaves Ray's default). A task killed with
    its worker or node is run again up to ``max_retries`` times; a :class:`~analysis.core.errors.LensError`
    raised by ``fn`` comes back as itself; a task the cluster could not finish raises
    :class:`ClusterError`; more GPUs per task than the cluster has: ConfigError (Ray would wait for
    ever). ``on_result(index, value)`` is called in the caller's thread as each one
    finishes. Ctrl-C (or any exception) cancels the tasks not finished. Needs a connection.
``cancel_task(ref)``
    Cancel one task: dropped if not started, its worker process killed if it has (never interrupted
    and kept: an interrupted first ``import torch`` breaks the process for every later task).
``task_resources(device) -> dict``
    ``{"num_cpus": 1, "num_gpus": 1}`` for a CUDA device, ``{"num_cpus": 1, "num_gpus": 0}`` else.
``local_cluster(nodes=2, cpus_per_node=1) -> Connection``
    A simulated multi-node cluster on this machine (``ray.cluster_utils.Cluster``), every node at
    127.0.0.1, and this process connected to it; ``close()`` removes it. For tests and benchmarks.
``address_from_env() -> str | None``
    ``$RESNET_LENS_RAY_ADDRESS`` checked, or None: where the app's pages send work.

Why the loopback takes an environment variable: Ray resolves 127.0.0.1 and ``localhost`` to the
machine's routable address wherever it meets them (``ray.init(_node_ip_address=...)``, ``ray start
--node-ip-address``, the address a driver connects to), unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``
is 0, the switch Ray itself uses on single-machine platforms. :func:`connect` sets it (and
``RAY_USAGE_STATS_ENABLED=0``) before Ray is imported; Ray reads it once, at import, so a process that
imported Ray before gets a :class:`~analysis.core.errors.ConfigError` instead of a node on another address.
The processes Ray starts inherit both.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

from analysis.core.errors import ConfigError, LensError

LOOPBACK = "127.0.0.1"
ADDRESS_ENV = "RESNET_LENS_RAY_ADDRESS"
INSTALL_HINT = "pip install '.[ray]' (or: pip install 'ray[client]==2.60.0')"
CLIENT_PORT = 10001  # the Ray Client server's default port
CONNECT_TIMEOUT_S = 5.0  # a cluster that does not accept a TCP connection within this is reported unreachable
# Ray's own switches, read when ray is imported (see the module docstring)
_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
_HOST_PORT = re.compile(r"(?a)^(?P<host>[A-Za-z0-9][A-Za-z0-9.\-]*|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})$")

T = TypeVar("T")
R = TypeVar("R")


class ClusterError(LensError):
    """The cluster could not finish a task: its worker or node died and the retries were used up,
    or Ray stopped it. The message names the task and what Ray reported."""


# ---------------------------------------------------------------------------- connecting
def _ray() -> Any:
    """Import Ray with the loopback and no-telemetry switches set (raises ConfigError without Ray)."""
    if "ray" not in sys.modules:
        for k, v in _ENV.items():
            os.environ[k] = v
    try:
        import ray
    except ImportError:
        raise ConfigError(f"Ray is not installed: {INSTALL_HINT}") from None
    return ray


def check_address(address: str | None) -> str | None:
    """The address as :func:`connect` takes it (None for a local instance), or ConfigError."""
    if address is None:
        return None
    text = address.strip()
    if text in ("", "local"):
        return None
    if text == "auto":
        return text
    rest = text.removeprefix("ray://")
    m = _HOST_PORT.match(rest)
    if m is None or not 1 <= int(m["port"]) <= 65535 or m["port"].startswith("0") or not _valid_host(m["host"]):
        raise ConfigError(f"Ray address {address!r}: give 'auto', 'ray://host:port' (a Ray Client server, port "
                          f"{CLIENT_PORT} by default) or 'host:port' (a cluster's GCS address)")
    return text


_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _valid_host(host: str) -> bool:
    """An IPv4 address (four octets 0-255), a bracketed IPv6 address, or a DNS name (RFC 1123
    labels: letters, digits and inner hyphens, 1-63 characters each, 253 in all)."""
    import ipaddress

    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    labels = host.split(".")
    if all(label.isdigit() for label in labels):  # numeric: must be a real IPv4 address, not a name
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return len(host) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


def address_from_env() -> str | None:
    """``$RESNET_LENS_RAY_ADDRESS`` (checked), or None when it is unset or empty."""
    value = os.environ.get(ADDRESS_ENV, "").strip()
    if not value:
        return None
    try:
        return check_address(value)
    except ConfigError as exc:
        raise ConfigError(f"${ADDRESS_ENV}: {exc}") from None


# HTTP/2's client preface and an empty SETTINGS frame: what a gRPC client (Ray's GCS and its Ray Client
# server both speak gRPC) sends first; a gRPC server answers with a SETTINGS frame of its own
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_H2_SETTINGS = 0x04


def _reachable(address: str) -> None:
    """A TCP connection to host:port (the Ray Client server or the GCS) that answers gRPC's opening,
    all within :data:`CONNECT_TIMEOUT_S`: an address nobody listens on, an HTTP server, a server that
    never answers or one that answers something else is said in seconds with what answered, instead
    of Ray's minutes of retries (823 s were seen for an HTTP server)."""
    m = _HOST_PORT.match(address.removeprefix("ray://"))
    if m is None:  # 'auto': Ray finds the address itself
        return
    host, port = m["host"].strip("[]"), int(m["port"])
    tls = os.environ.get("RAY_USE_TLS", "0").strip().lower() not in ("", "0", "false")
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S) as sock:
            if tls:  # a TLS cluster answers a plaintext opening with an alert: the TCP connect is the check
                return
            sock.settimeout(CONNECT_TIMEOUT_S)
            reply = b""
            try:
                sock.sendall(_H2_PREFACE)
                while len(reply) < 9:
                    chunk = sock.recv(64)
                    if not chunk:
                        break
                    reply += chunk
            except ConnectionError:  # connected, then reset: what it sent first (if anything) says who it is
                pass
            except TimeoutError:
                raise ConfigError(f"Ray cluster at {address}: something accepted the connection but did not "
                                  f"answer in {CONNECT_TIMEOUT_S:g} s; it is not a Ray cluster (check the port: the "
                                  f"Ray Client server listens on {CLIENT_PORT}, the GCS on 6379)") from None
    except ConfigError:
        raise
    except OSError as exc:
        raise ConfigError(f"Ray cluster at {address} is unreachable ({exc.strerror or exc}); "
                          "check the address and that the cluster is running") from None
    if len(reply) >= 9 and reply[3] == _H2_SETTINGS:
        return
    web = reply.startswith(b"HTTP/") or reply.lstrip().lower().startswith((b"<!doctype", b"<html"))
    if reply[:2] == b"\x15\x03":  # a TLS alert record
        raise ConfigError(f"Ray cluster at {address}: a TLS server answered; if the cluster uses TLS, set "
                          "RAY_USE_TLS=1 (and its certificate variables) here too")
    what = ("an HTTP server" if web else "nothing (the connection was closed)" if not reply
            else f"something that is not Ray ({reply[:16]!r})")
    raise ConfigError(f"Ray cluster at {address}: {what} answered, not a Ray cluster (Ray speaks gRPC); check the "
                      f"address and port")


class Connection:
    """This process connected to Ray. ``started``: whether this connection started the instance
    (then :meth:`close` shuts it down); ``address``: the cluster's address as Ray reports it."""

    def __init__(self, address: str, started: bool, on_close: Callable[[], None] | None = None,
                 cluster: Any = None) -> None:
        self.address = address
        self.started = started
        self.cluster = cluster  # local_cluster's ray.cluster_utils.Cluster (tests reach its nodes), else None
        self._on_close = on_close

    def resources(self) -> dict[str, float]:
        """The cluster's total resources (CPU, GPU, memory ...) as Ray counts them."""
        ray = _ray()
        return {k: float(v) for k, v in ray.cluster_resources().items()}

    def close(self) -> None:
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _loopback_checked(ray: Any) -> None:
    """Refuse to start nodes when Ray was imported before its loopback switch was set."""
    from ray._private import ray_constants  # read-only: Ray's import-time copy of the switch

    if ray_constants.ENABLE_RAY_CLUSTER:
        raise ConfigError("Ray was imported before analysis.run.cluster could keep it on 127.0.0.1; start Python with "
                          "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 or connect before importing ray")


def _is_loopback(address: str) -> bool:
    m = _HOST_PORT.match(address.removeprefix("ray://"))
    return m is not None and (m["host"] == "localhost" or m["host"].startswith("127.") or m["host"] == "[::1]")


@contextlib.contextmanager
def _keep_sigterm() -> Iterator[None]:
    """``ray.init`` replaces the SIGTERM handler with ``sys.exit``; the caller's (the CLI's: SIGTERM
    cancels a grid and keeps its finished runs) is put back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _init_kwargs() -> dict[str, Any]:
    # Ray's own INFO lines (and the workers' output) would interleave with the CLI's progress bars;
    # errors still come back as exceptions
    return {"logging_level": logging.ERROR, "log_to_driver": False, "configure_logging": True}


def connect(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None) -> Connection:
    """Connect this process to Ray (see the module docstring)."""
    address = check_address(address)
    for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ConfigError(f"{name} must be a whole number >= 0, got {value!r}")
    if address is not None and (num_cpus is not None or num_gpus is not None):
        raise ConfigError("num_cpus / num_gpus size a local Ray instance; an existing cluster has its own")
    if address is not None:
        _reachable(address)  # also when connected already: a wrong address is said, not silently replaced
    ray = _ray()
    if ray.is_initialized():  # a caller (or a test's cluster) connected first: use it, leave it running
        return Connection(_current_address(ray), started=False)
    if address is None or address == "auto" or _is_loopback(address):
        _loopback_checked(ray)
    if address is None:
        # 'local' (not None): None would join whatever cluster /tmp/ray/ray_current_cluster names
        with _keep_sigterm():
            ctx = ray.init(address="local", _node_ip_address=LOOPBACK, include_dashboard=False, num_cpus=num_cpus,
                           num_gpus=num_gpus, **_init_kwargs())
        if ctx.address_info["node_ip_address"] != LOOPBACK:  # belt and braces: never keep a node elsewhere
            ray.shutdown()
            raise ConfigError(f"Ray bound to {ctx.address_info['node_ip_address']}, not {LOOPBACK}; shut down")
        return Connection(ctx.address_info["address"], started=True, on_close=ray.shutdown)
    try:
        with _keep_sigterm():
            ray.init(address=address, **_init_kwargs())
    except ConnectionError as exc:
        raise ConfigError(f"Ray cluster at {address}: {exc}") from None
    # the driver leaves the cluster on close; the cluster itself is not ours to stop
    return Connection(_current_address(ray), started=False, on_close=ray.shutdown)


def _current_address(ray: Any) -> str:
    ctx = ray.get_runtime_context()
    return str(getattr(ctx, "gcs_address", "") or "connected")


def local_cluster(nodes: int = 2, cpus_per_node: int = 1, *, object_store_mb: int = 150) -> Connection:
    """A simulated multi-node cluster in this machine, every node at 127.0.0.1, with this process
    connected to it (tests and benchmarks); ``close()`` disconnects and stops every node."""
    if isinstance(nodes, bool) or not isinstance(nodes, int) or not 1 <= nodes <= 16:
        raise ConfigError(f"nodes must be a whole number from 1 to 16, got {nodes!r}")
    if isinstance(cpus_per_node, bool) or not isinstance(cpus_per_node, int) or not 1 <= cpus_per_node <= 256:
        raise ConfigError(f"cpus_per_node must be a whole number from 1 to 256, got {cpus_per_node!r}")
    ray = _ray()
    _loopback_checked(ray)
    if ray.is_initialized():
        raise ConfigError("Ray is already initialised in this process; close that connection first")
    from ray.cluster_utils import Cluster

    node_args: dict[str, Any] = {"node_ip_address": LOOPBACK, "num_cpus": cpus_per_node, "include_dashboard": False,
                 "object_store_memory": object_store_mb * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args=node_args)
    try:
        for _ in range(nodes - 1):
            cluster.add_node(**{k: v for k, v in node_args.items() if k != "include_dashboard"})
        cluster.wait_for_nodes()
        with _keep_sigterm():
            ray.init(address=cluster.address, **_init_kwargs())
    except BaseException:
        cluster.shutdown()
        raise

    def stop() -> None:
        ray.shutdown()
        cluster.shutdown()

    return Connection(cluster.address, started=True, on_close=stop, cluster=cluster)


# ---------------------------------------------------------------------------- tasks
def cancel_task(ref: Any) -> None:
    """Cancel a Ray task for good: dropped if it has not started, its worker process killed if it has.

    Why kill and not interrupt: Ray's default cancel raises KeyboardInterrupt in the worker and keeps
    the process for later tasks. A task not yet running our code may be deserialising its arguments,
    i.e. importing torch for the first time in that worker; an ``import torch`` interrupted there
    leaves torch's C++ extension half-initialised, and every later ``import torch`` in that process
    fails (``SystemError: ... method: bad call flags``, "partially initialized module 'torch'", a
    pybind11 "already defined" abort; reproduced by a SIGINT 0.1-1 s into ``import torch``). That was
    the suite's Ray flake: a cancel in one test broke the next test's task on the same worker. A killed
    worker takes the broken state with it; Ray starts a fresh one and does not retry a cancelled task.
    """
    import ray

    with contextlib.suppress(Exception):  # already finished or gone: nothing to cancel
        ray.cancel(ref, force=True)


def task_resources(device: str = "cpu") -> dict[str, float]:
    """One CPU per task, and one GPU when ``device`` is CUDA (Ray then sets CUDA_VISIBLE_DEVICES)."""
    return {"num_cpus": 1, "num_gpus": 1 if str(device).startswith("cuda") else 0}


def _call(fn: Callable[[Any], Any], item: Any, threads: int | None) -> Any:
    """The task body: one torch thread count, then ``fn(item)``."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return fn(item)


def _unwrap(ray: Any, exc: BaseException, what: str) -> BaseException:
    """Our errors raised in a task come back as themselves; the cluster's failures as ClusterError."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, LensError):
        return cause
    if isinstance(exc, ray.exceptions.RayTaskError):
        return cast(BaseException, exc)  # a bug in the task: keep Ray's error with the remote traceback
    first = (str(exc).strip().splitlines() or [""])[0]
    return ClusterError(f"{what}: {type(exc).__name__}: {first}")


def map_tasks(fn: Callable[[T], R], items: Sequence[T], *, num_cpus: float = 1, num_gpus: float = 0,
              threads: int | None = 1, max_retries: int = 3,
              on_result: Callable[[int, R], None] | None = None) -> list[R]:
    """``[fn(item) for item in items]`` as Ray tasks, in the order of ``items`` (module docstring)."""
    if num_cpus < 0 or num_gpus < 0:
        raise ConfigError(f"num_cpus and num_gpus must be >= 0, got {num_cpus}, {num_gpus}")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigError(f"max_retries must be a whole number >= 0, got {max_retries!r}")
    ray = _ray()
    if not ray.is_initialized():
        raise ConfigError("not connected to Ray: call analysis.run.cluster.connect() first")
    if not items:
        return []
    if num_gpus and num_gpus > ray.cluster_resources().get("GPU", 0):
        # Ray would keep such tasks waiting for a GPU that never comes
        raise ConfigError(f"the tasks ask for {num_gpus:g} GPU each; the Ray cluster has "
                          f"{ray.cluster_resources().get('GPU', 0):g}")
    remote = ray.remote(_call).options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries)
    fn_ref = ray.put(fn)
    refs = [remote.remote(fn_ref, item, threads) for item in items]
    index = {ref: i for i, ref in enumerate(refs)}
    out: list[Any] = [None] * len(refs)
    pending = list(refs)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                i = index[ref]
                try:
                    out[i] = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    raise _unwrap(ray, exc, f"task {i + 1} of {len(refs)}") from None
                if on_result is not None:
                    on_result(i, out[i])
    except BaseException:
        for ref in pending:
            cancel_task(ref)
        raise
    return out


__all__ = ["ADDRESS_ENV", "LOOPBACK", "ClusterError", "Connection", "address_from_env", "cancel_task", "check_address",
           "connect", "local_cluster", "map_tasks", "task_resources"]
