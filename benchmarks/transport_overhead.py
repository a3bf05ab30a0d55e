"""Transport overhead: flmi's gRPC runtime against a bare gRPC echo of raw byte chunks.

Transport alone, no training: the server broadcasts a model to 4 sites (by
default) and collects 4 updates of the same size (each site sends back what it
received) on 127.0.0.1, over mutual TLS. The flmi arm runs the real deployment
code: :class:`GrpcRuntime` and the gRPC service with the certificate
interceptor on the server, :class:`SiteClient` in 4 client processes, tensors
streamed as raw bytes in 1 MiB frames, every update checked for size, schema
and NaN, with and without the audit trail's SHA-256 of every payload.

The floor moves the same bytes with the least gRPC can do: the same mTLS, a
server-streaming download of one pre-made 1 MiB byte chunk sent again and
again (no copy), and a client-streaming upload of 1 MiB slices of what was
received (one copy each, as any sender makes), 4 client processes, no
protobuf messages, no checks. Both arms receive into a numpy buffer.

Usage::

    .venv/bin/python benchmarks/transport_overhead.py [--sizes 10 100] [--repeats 3] [--sites 4]

A model over 2 GB, once (not in CI; about 9 GB of memory for one site)::

    nice .venv/bin/python benchmarks/transport_overhead.py --sizes 550 --sites 1

Prints MB/s (bytes moved down and up, per second of wall time) and the ratio
of flmi's time to the floor's (goal: <= 1.3 for 10 M parameters). It prints
CPU seconds per round too (server and all site processes together, from the
end of the warm-up round's download), and their ratio: on a machine shared
with other work, CPU time is disturbed less than wall time. Last come the peak
resident memory of the server process (the largest so far in this run, read
after each arm: the floor runs first) and of the largest site process, in GB.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np

from flmi.core.messages import (
    ClientError,
    ClientUpdate,
    ErrorCode,
    EvaluateInstruction,
    EvaluateReply,
    TrainInstruction,
    TrainReply,
    UpdateKind,
)
from flmi.core.params import Params
from flmi.runtime.grpc.audit import AuditLog
from flmi.runtime.grpc.client import ClientSettings, SiteClient
from flmi.runtime.grpc.coordinator import Coordinator, GrpcRuntime
from flmi.runtime.grpc.interceptor import RevocationList, SiteAuthInterceptor
from flmi.runtime.grpc.provisioning import add_site, init_ca
from flmi.runtime.grpc.server import server_options
from flmi.runtime.grpc.service import FederationService, ServiceSettings
from flmi.runtime.grpc.siteconf import Bounds
from flmi.runtime.grpc.tls import server_credentials, site_credentials
from flmi.runtime.grpc.transport import add_federation_service

CHUNK = 1 << 20
MAX_MESSAGE = CHUNK + (1 << 16)
ROWS = 1000  # each tensor is ROWS x COLS float32


def model(million: int) -> Params:
    """About ``million`` million float32 parameters in tensors of 1000 x 1000."""
    rng = np.random.default_rng(0)
    return {
        f"layer{i:03d}.weight": rng.standard_normal((ROWS, 1000), dtype=np.float32)
        for i in range(million)
    }


def schema_model(million: int) -> Params:
    """The tensors of :func:`model` unwritten: only names, shapes and dtypes are read."""
    return {f"layer{i:03d}.weight": np.zeros((ROWS, 1000), np.float32) for i in range(million)}


def peak_rss_gb() -> float:
    """This process's peak resident memory so far, in GB (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def write_usage(path: Path, cpu_started: float) -> None:
    """Write a site process's CPU seconds since ``cpu_started`` and its peak memory."""
    path.write_text(f"{time.process_time() - cpu_started} {peak_rss_gb()}")


def sites_usage(root: Path, sites: list[str]) -> tuple[float, float]:
    """The site processes' CPU seconds summed, and the largest peak memory (files read once)."""
    cpu, rss = 0.0, 0.0
    for site in sites:
        path = root / f"{site}-cpu"
        seconds, peak = path.read_text().split()
        cpu, rss = cpu + float(seconds), max(rss, float(peak))
        path.unlink()
    return cpu, rss


class EchoSite:
    """A site that sends back what it received: transport, no training."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cpu_started = time.process_time()

    def train(self, instruction: TrainInstruction) -> TrainReply:
        """The received weights as the update."""
        if instruction.rnd == 1:
            self.cpu_started = time.process_time()
        return ClientUpdate(
            site=self.name,
            params=dict(instruction.params),
            kind=UpdateKind.FULL,
            num_examples=1,
            num_steps=1,
            metrics={},
        )

    def evaluate(self, instruction: EvaluateInstruction) -> EvaluateReply:
        """An echo site holds no data: it answers any evaluation request with an error code."""
        return ClientError(
            site=self.name, code=ErrorCode.DATA_ERROR, message="the echo site holds no data"
        )


# ---------------------------------------------------------------- the flmi arm


def flmi_client(
    address: str, site: str, certs: Path, million: int, audit: Path | None, cpu: Path
) -> None:
    """One site process of the flmi arm; writes its CPU seconds after the warm-up to ``cpu``."""
    echo = EchoSite(site)
    client = SiteClient(
        settings=ClientSettings(
            server=address,
            task="classification",
            schema=schema_model(million),
            bounds=Bounds(),
            max_message_bytes=MAX_MESSAGE,
        ),
        credentials=site_credentials(certs),
        make_site=lambda _round: echo,
        audit=AuditLog(path=audit) if audit is not None else None,
    )
    client.run()
    write_usage(cpu, echo.cpu_started)


def flmi_arm(
    root: Path, million: int, repeats: int, sites: list[str], *, audit: bool
) -> tuple[list[float], float, float]:
    """Seconds per round (broadcast to every site, collect their updates) over flmi's runtime.

    Also returns the CPU seconds per measured round of the server and the sites
    together, and the largest site process's peak memory in GB.
    """
    params = model(million)
    coordinator = Coordinator(sites=sites, heartbeat_s=5.0)
    service = FederationService(
        coordinator=coordinator,
        settings=ServiceSettings(
            task="classification",
            strategy="fedavg",
            rounds=repeats + 1,
            reference=params,
            plans={},
            chunk_bytes=CHUNK,
            max_message_bytes=MAX_MESSAGE,
            max_payload_bytes=1 << 34,
            heartbeat_s=5.0,
        ),
        audit=AuditLog(path=root / f"server-audit-{million}.jsonl") if audit else None,
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=32),
        interceptors=[SiteAuthInterceptor(allowed=sites, revoked=RevocationList(path=None))],
        options=server_options(max_message_bytes=MAX_MESSAGE, heartbeat_s=5.0),
    )
    add_federation_service(service, server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(root / "ca" / "server"))
    server.start()
    clients = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--flmi-client",
                f"127.0.0.1:{port}",
                site,
                str(root / site),
                str(million),
                str(root / f"{site}-audit-{million}.jsonl") if audit else "",
                str(root / f"{site}-cpu"),
            ]
        )
        for site in sites
    ]
    coordinator.wait_for_sites(minimum=len(sites), timeout_s=600)
    runtime = GrpcRuntime(coordinator=coordinator, round_timeout_s=3600, audit_digests=audit)
    times = []
    cpu_started = 0.0
    for rnd in range(1, repeats + 2):  # the first round warms up
        instruction = TrainInstruction(rnd=rnd, params=params, hparams={})
        if rnd == 2:
            cpu_started = time.process_time()
        started = time.perf_counter()
        replies = runtime.train({site: instruction for site in sites})
        del instruction
        elapsed = time.perf_counter() - started
        assert all(isinstance(r, ClientUpdate) for r in replies.values()), replies
        del replies  # an update's buffer is freed before the next round's arrives
        if rnd > 1:
            times.append(elapsed)
    server_cpu = time.process_time() - cpu_started
    coordinator.finish()
    for client in clients:
        client.wait(timeout=600)
    server.stop(grace=1.0).wait()
    sites_cpu, sites_rss = sites_usage(root, sites)
    return times, (server_cpu + sites_cpu) / repeats, sites_rss


# ---------------------------------------------------------------- the floor


def _identity(data: bytes) -> bytes:
    return data


class Floor:
    """A bare gRPC server: stream a byte payload down, take one up, per site and round."""

    def __init__(self, *, payload_bytes: int) -> None:
        self.chunk = b"\x01" * CHUNK
        self.payload_bytes = payload_bytes
        self.go = threading.Event()
        self.lock = threading.Condition()
        self.uploads = 0

    def download(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        self.go.wait()
        sent = 0
        while sent < self.payload_bytes:
            piece = self.chunk[: min(CHUNK, self.payload_bytes - sent)]
            sent += len(piece)
            yield piece  # the same bytes object every time: the floor copies nothing here

    def upload(self, chunks: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        received = np.empty(self.payload_bytes, np.uint8).data  # as flmi's receiver
        offset = 0
        for piece in chunks:
            received[offset : offset + len(piece)] = piece
            offset += len(piece)
        with self.lock:
            self.uploads += 1
            self.lock.notify_all()
        return b""


def floor_client(address: str, certs: Path, payload_bytes: int, rounds: int, cpu: Path) -> None:
    """One site process of the floor arm; writes its CPU seconds after the warm-up to ``cpu``."""
    channel = grpc.secure_channel(
        address,
        site_credentials(certs),
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
        ],
    )
    download = channel.unary_stream(
        "/floor/Download", request_serializer=_identity, response_deserializer=_identity
    )
    upload = channel.stream_unary(
        "/floor/Upload", request_serializer=_identity, response_deserializer=_identity
    )
    cpu_started = time.process_time()
    for rnd in range(1, rounds + 1):
        received = np.empty(payload_bytes, np.uint8).data  # as flmi's receiver
        offset = 0
        for piece in download(b""):
            received[offset : offset + len(piece)] = piece
            offset += len(piece)
        if rnd == 1:
            cpu_started = time.process_time()
        upload(bytes(received[i : i + CHUNK]) for i in range(0, payload_bytes, CHUNK))
    channel.close()
    write_usage(cpu, cpu_started)


def floor_arm(
    root: Path, million: int, repeats: int, sites: list[str]
) -> tuple[list[float], float, float]:
    """Seconds per round for the same bytes over a bare gRPC echo, CPU seconds and site memory."""
    payload = million * ROWS * 1000 * 4
    floor = Floor(payload_bytes=payload)
    handler = grpc.method_handlers_generic_handler(
        "floor",
        {
            "Download": grpc.unary_stream_rpc_method_handler(
                floor.download, request_deserializer=_identity, response_serializer=_identity
            ),
            "Upload": grpc.stream_unary_rpc_method_handler(
                floor.upload, request_deserializer=_identity, response_serializer=_identity
            ),
        },
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=32),
        handlers=[handler],
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
        ],
    )
    port = server.add_secure_port("127.0.0.1:0", server_credentials(root / "ca" / "server"))
    server.start()
    clients = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--floor-client",
                f"127.0.0.1:{port}",
                str(root / site),
                str(payload),
                str(repeats + 1),
                str(root / f"{site}-cpu"),
            ]
        )
        for site in sites
    ]
    times = []
    cpu_started = 0.0
    for rnd in range(1, repeats + 2):
        if rnd == 2:
            cpu_started = time.process_time()
        with floor.lock:
            floor.uploads = 0
        started = time.perf_counter()
        floor.go.set()
        with floor.lock:
            while floor.uploads < len(sites):
                floor.lock.wait()
        floor.go.clear()
        elapsed = time.perf_counter() - started
        if rnd > 1:
            times.append(elapsed)
    server_cpu = time.process_time() - cpu_started
    for client in clients:
        client.wait(timeout=600)
    server.stop(grace=1.0).wait()
    sites_cpu, sites_rss = sites_usage(root, sites)
    return times, (server_cpu + sites_cpu) / repeats, sites_rss


def main() -> None:
    """Run both arms for each model size and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100], metavar="MILLION")
    parser.add_argument("--repeats", type=int, default=3, help="measured rounds per arm")
    parser.add_argument("--sites", type=int, default=4, help="site processes")
    args = parser.parse_args()
    sites = [f"hospital_{i}" for i in range(1, args.sites + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        init_ca(ca_dir=root / "ca")
        for site in sites:
            add_site(ca_dir=root / "ca", name=site, out=root / site)
        print(
            f"{'params':>7} {'arm':<20} {'s/round':>8} {'MB/s':>6} {'x floor':>7} "
            f"{'CPU s':>6} {'x floor':>7} {'RSS GB server':>13} {'site':>5}",
            flush=True,
        )
        for million in args.sizes:
            repeats = args.repeats if million <= 20 else 1
            moved = 2 * len(sites) * million * ROWS * 1000 * 4  # down and up
            # The server's peak memory is read after each arm (it only grows; the floor is first).
            runs = [("grpc echo (floor)", floor_arm(root, million, repeats, sites), peak_rss_gb())]
            flmi = flmi_arm(root, million, repeats, sites, audit=False)
            runs.append(("flmi", flmi, peak_rss_gb()))
            audited = flmi_arm(root, million, repeats, sites, audit=True)
            runs.append(("flmi + audit sha256", audited, peak_rss_gb()))
            floor_s, floor_cpu = statistics.median(runs[0][1][0]), runs[0][1][1]
            for arm, (times, cpu, site_rss), server_rss in runs:
                seconds = statistics.median(times)
                print(
                    f"{million:>6}M {arm:<20} {seconds:>8.2f} {moved / seconds / 1e6:>6.0f} "
                    f"{seconds / floor_s:>7.2f} {cpu:>6.2f} {cpu / floor_cpu:>7.2f} "
                    f"{server_rss:>13.1f} {site_rss:>5.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--flmi-client":
        _, _, address, site, certs, million, audit, cpu = sys.argv
        flmi_client(
            address, site, Path(certs), int(million), Path(audit) if audit else None, Path(cpu)
        )
    elif len(sys.argv) > 1 and sys.argv[1] == "--floor-client":
        _, _, address, certs, payload, rounds, cpu = sys.argv
        floor_client(address, Path(certs), int(payload), int(rounds), Path(cpu))
    else:
        main()
