"""A hostile server process for the homomorphic aggregation tests.

It serves real ``flmi client`` processes with flmi's own gRPC service and
runtime, runs round 1 honestly, then, in round 2, asks the key holder to
decrypt what an honest server never would: a single update, a stale round's
sum, round 1's sum restamped as round 2's, a sum with a forged contribution, a
sum that is not of the listed ciphertexts and one signer listed many times.
Last it asks for round 2's honest sum and runs round 3 through the ordinary
:meth:`HEServer.aggregate`. It writes every answer to a JSON file:

    python -m tests.runtime.he_hostile_server --config FED --certs BUNDLE --address HOST:PORT \
        --out RESULT.json
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from flmi.config import load_config
from flmi.core.messages import ClientError, TrainInstruction
from flmi.privacy.he import HERound, HEServer, Stage
from flmi.privacy.he_sums import SignedSum
from flmi.privacy.setup import build_secure
from flmi.privacy.wire import Payload
from flmi.runtime.grpc.coordinator import Coordinator, GrpcRuntime
from flmi.runtime.grpc.interceptor import RevocationList, SiteAuthInterceptor
from flmi.runtime.grpc.secure import AggregationPlan
from flmi.runtime.grpc.server import deployment_task, server_options, site_plans
from flmi.runtime.grpc.service import FederationService, ServiceSettings
from flmi.runtime.grpc.tls import server_credentials
from flmi.runtime.grpc.transport import add_federation_service
from flmi.tasks.torch_params import params_copy
from flmi.wiring import make_strategy
from tests.privacy import he_attacks


def _answer(reply: bytes | ClientError | None) -> dict[str, Any]:
    if isinstance(reply, bytes):
        values = Payload.decode(reply, where="hostile").blobs.get("sum", b"")
        return {"decrypted": True, "values": len(values) // 8}
    return {"decrypted": False, "message": "" if reply is None else reply.message}


def main(argv: list[str]) -> int:
    """Serve the clients, attack, record; 0 when the script ran to its end."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--certs", type=Path, required=True)
    parser.add_argument("--address", default="127.0.0.1:0")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    d = config.deploy
    initial = params_copy(deployment_task(config).build_model(seed=config.federation.seed))
    strategy = make_strategy(config, d.sites)
    secure = build_secure(config.privacy, strategy=strategy.name, site_names=d.sites)
    assert isinstance(secure, HEServer)
    coordinator = Coordinator(sites=d.sites, heartbeat_s=d.heartbeat_s)
    plans = site_plans(config)
    service = FederationService(
        coordinator=coordinator,
        settings=ServiceSettings(
            task=config.task.name,
            strategy=strategy.name,
            rounds=config.federation.rounds,
            reference=initial,
            plans=plans,
            chunk_bytes=d.chunk_bytes,
            max_message_bytes=d.max_message_bytes,
            max_payload_bytes=d.max_payload_bytes,
            heartbeat_s=d.heartbeat_s,
            aggregation=AggregationPlan.from_config(config.privacy),
        ),
        audit=None,
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4 * len(d.sites) + 8),
        interceptors=[SiteAuthInterceptor(allowed=d.sites, revoked=RevocationList(path=None))],
        options=server_options(max_message_bytes=d.max_message_bytes, heartbeat_s=d.heartbeat_s),
    )
    add_federation_service(service, server)
    port = server.add_secure_port(args.address, server_credentials(args.certs))
    server.start()
    print(f"flmi server listening on {args.address.rsplit(':', 1)[0]}:{port}", flush=True)
    try:
        coordinator.wait_for_sites(minimum=len(d.sites), timeout_s=d.wait_for_sites_s)
        runtime = GrpcRuntime(coordinator=coordinator, round_timeout_s=d.round_timeout_s)
        holder = secure.key_holder

        def train(rnd: int) -> dict[str, Any]:
            return dict(
                runtime.train(
                    {
                        s: TrainInstruction(rnd=rnd, params=initial, hparams=plans[s])
                        for s in d.sites
                    }
                )
            )

        def signed_round(rnd: int) -> SignedSum:
            replies = train(rnd)
            run = HERound(rnd=rnd, exchange=runtime)
            signed = secure.collect(run, secure.setup(run, sorted(replies)))
            assert signed is not None, run.errors
            return signed

        def decrypt(request: Payload, rnd: int) -> dict[str, Any]:
            replies = runtime.exchange(
                stage=Stage.DECRYPT, rnd=rnd, payloads={holder: request.encode()}
            )
            return _answer(replies.get(holder))

        results: dict[str, Any] = {}
        first = signed_round(1)
        results["honest_1"] = decrypt(first.decrypt_request(), 1)
        second = signed_round(2)
        public = secure.public
        assert public is not None
        results["single"] = decrypt(he_attacks.single(second), 2)
        results["stale"] = decrypt(first.decrypt_request(), 1)
        results["restamped"] = decrypt(he_attacks.restamped(first, 2), 2)
        results["forged"] = decrypt(he_attacks.forged(second, public), 2)
        results["wrong_sum"] = decrypt(he_attacks.wrong_sum(second), 2)
        results["duplicated"] = decrypt(he_attacks.duplicated(second), 2)
        results["honest_2"] = decrypt(second.decrypt_request(), 2)
        results["size"] = second.size
        outcome = secure.aggregate(rnd=3, exchange=runtime, replies=train(3), reference=initial)
        results["round_3"] = {
            "contributors": outcome.contributors,
            "update": outcome.update is not None,
            "errors": {s: e.message for s, e in outcome.errors.items()},
        }
        args.out.write_text(json.dumps(results, indent=1))
        coordinator.finish()
        coordinator.wait_until_all_done(10.0)
    finally:
        server.stop(grace=1.0).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
