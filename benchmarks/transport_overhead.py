"""Transport overhead: flmi's gRPC runtime against a bare gRPC echo of raw byte chunks.

Transport alone, no training: the server broadcasts a model to 4 sites and
collects 4 updates of the same size (each site sends back what it received)
on 127.0.0.1, over mutual TLS. The flmi arm runs the real deployment code:
:class:`GrpcRuntime` and the gRPC service with the certificate interceptor on
the server, :class:`SiteClient` in 4 client processes, tensors streamed as raw
bytes in 1 MiB frames, every update checked for schema and NaN, with and
without the audit trail's SHA-256 of every payload.

The floor moves the same bytes with the least gRPC can do: the same mTLS, a
server-streaming download and a client-streaming upload of pre-made 1 MiB
byte chunks per site, 4 client processes, no protobuf messages, no checks.

Usage::

    .venv/bin/python benchmarks/transport_overhead.py [--sizes 10 100] [--repeats 3]

Prints MB/s (bytes moved down and up, per second of wall time) and the ratio
of flmi's time to the floor's (goal: <= 1.3 for 10 M parameters).
"""

from __future__ import annotations

import argparse
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
from flmi.runtime.grpc import flmi_pb2_grpc as pb_grpc
from flmi.runtime.grpc.audit import AuditLog
from flmi.runtime.grpc.client import ClientSettings, SiteClient
from flmi.runtime.grpc.coordinator import Coordinator, GrpcRuntime
from flmi.runtime.grpc.interceptor import RevocationList, SiteAuthInterceptor
from flmi.runtime.grpc.provisioning import add_site, init_ca
from flmi.runtime.grpc.server import server_options
from flmi.runtime.grpc.service import FederationService, ServiceSettings
from flmi.runtime.grpc.siteconf import Bounds
from flmi.runtime.grpc.tls import server_credentials, site_credentials

SITES = [f"hospital_{i}" for i in range(1, 5)]
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


class EchoSite:
    """A site that sends back what it received: transport, no training."""

    def __init__(self, name: str) -> None:
        self.name = name

    def train(self, instruction: TrainInstruction) -> TrainReply:
        """The received weights as the update."""
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


def flmi_client(address: str, site: str, certs: Path, million: int, audit: Path | None) -> None:
    """One site process of the flmi arm."""
    client = SiteClient(
        settings=ClientSettings(
            server=address,
            task="classification",
            schema=model(million),
            bounds=Bounds(),
            max_message_bytes=MAX_MESSAGE,
        ),
        credentials=site_credentials(certs),
        make_site=lambda _round: EchoSite(site),
        audit=AuditLog(path=audit) if audit is not None else None,
    )
    client.run()


def flmi_arm(root: Path, million: int, repeats: int, *, audit: bool) -> list[float]:
    """Seconds per round (broadcast to 4 sites, collect 4 updates) over flmi's runtime."""
    params = model(million)
    coordinator = Coordinator(sites=SITES, heartbeat_s=5.0)
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
        interceptors=[SiteAuthInterceptor(allowed=SITES, revoked=RevocationList(path=None))],
        options=server_options(max_message_bytes=MAX_MESSAGE, heartbeat_s=5.0),
    )
    pb_grpc.add_FederationServicer_to_server(service, server)  # type: ignore[no-untyped-call]
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
            ]
        )
        for site in SITES
    ]
    coordinator.wait_for_sites(minimum=len(SITES), timeout_s=600)
    runtime = GrpcRuntime(coordinator=coordinator, round_timeout_s=3600, audit_digests=audit)
    times = []
    for rnd in range(1, repeats + 2):  # the first round warms up
        instruction = TrainInstruction(rnd=rnd, params=params, hparams={})
        started = time.perf_counter()
        replies = runtime.train({site: instruction for site in SITES})
        elapsed = time.perf_counter() - started
        assert all(isinstance(r, ClientUpdate) for r in replies.values()), replies
        if rnd > 1:
            times.append(elapsed)
    coordinator.finish()
    for client in clients:
        client.wait(timeout=600)
    server.stop(grace=1.0).wait()
    return times


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
            yield piece
        # a copy of each chunk is what a real sender makes when slicing a tensor
        return

    def upload(self, chunks: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        received = bytearray(self.payload_bytes)
        offset = 0
        for piece in chunks:
            received[offset : offset + len(piece)] = piece
            offset += len(piece)
        with self.lock:
            self.uploads += 1
            self.lock.notify_all()
        return b""


def floor_client(address: str, certs: Path, payload_bytes: int, rounds: int) -> None:
    """One site process of the floor arm."""
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
    for _ in range(rounds):
        received = bytearray(payload_bytes)
        offset = 0
        for piece in download(b""):
            received[offset : offset + len(piece)] = piece
            offset += len(piece)
        view = memoryview(received)
        upload(bytes(view[i : i + CHUNK]) for i in range(0, payload_bytes, CHUNK))
    channel.close()


def floor_arm(root: Path, million: int, repeats: int) -> list[float]:
    """Seconds per round for the same bytes over a bare gRPC echo."""
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
            ]
        )
        for site in SITES
    ]
    times = []
    for rnd in range(1, repeats + 2):
        with floor.lock:
            floor.uploads = 0
        started = time.perf_counter()
        floor.go.set()
        with floor.lock:
            while floor.uploads < len(SITES):
                floor.lock.wait()
        floor.go.clear()
        elapsed = time.perf_counter() - started
        if rnd > 1:
            times.append(elapsed)
    for client in clients:
        client.wait(timeout=600)
    server.stop(grace=1.0).wait()
    return times


def main() -> None:
    """Run both arms for each model size and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100], metavar="MILLION")
    parser.add_argument("--repeats", type=int, default=3, help="measured rounds per arm")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        init_ca(ca_dir=root / "ca")
        for site in SITES:
            add_site(ca_dir=root / "ca", name=site, out=root / site)
        print(f"{'params':>7} {'arm':<22} {'s/round':>8} {'MB/s':>8} {'x floor':>8}", flush=True)
        for million in args.sizes:
            repeats = args.repeats if million <= 20 else 1
            moved = 2 * len(SITES) * million * ROWS * 1000 * 4  # down and up
            floor = statistics.median(floor_arm(root, million, repeats))
            rows = [("grpc echo (floor)", floor)]
            rows.append(("flmi", statistics.median(flmi_arm(root, million, repeats, audit=False))))
            rows.append(
                (
                    "flmi + audit sha256",
                    statistics.median(flmi_arm(root, million, repeats, audit=True)),
                )
            )
            for arm, seconds in rows:
                print(
                    f"{million:>6}M {arm:<22} {seconds:>8.2f} {moved / seconds / 1e6:>8.0f} "
                    f"{seconds / floor:>8.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--flmi-client":
        _, _, address, site, certs, million, audit = sys.argv
        flmi_client(address, site, Path(certs), int(million), Path(audit) if audit else None)
    elif len(sys.argv) > 1 and sys.argv[1] == "--floor-client":
        _, _, address, certs, payload, rounds = sys.argv
        floor_client(address, Path(certs), int(payload), int(rounds))
    else:
        main()
