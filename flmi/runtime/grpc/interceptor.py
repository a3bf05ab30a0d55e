"""Who is calling: the site named by the peer certificate, checked on every call.

gRPC's TLS credentials check the certificate chain but take no revocation
list, so this interceptor reads the peer certificate from the auth context and
refuses a site that is not on the allow-list, or whose name or certificate
serial number is on the revocation list (re-read whenever the file changes).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

import grpc
from cryptography import x509

from flmi.runtime.grpc.codes import ERROR_CODE_KEY, WireError

log = logging.getLogger("flmi.server")


class RevocationList:
    """Site names and certificate serial numbers (hex) that may no longer connect.

    The file holds one entry per line; ``#`` starts a comment. It is re-read
    when its modification time changes, so revoking a site needs no restart.

    Parameters
    ----------
    path
        The file (``None``: nothing is revoked).
    """

    def __init__(self, *, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._stamp: float | None = None
        self._entries: frozenset[str] = frozenset()

    def entries(self) -> frozenset[str]:
        """The current entries, lower-cased."""
        if self._path is None:
            return frozenset()
        with self._lock:
            try:
                stamp = self._path.stat().st_mtime_ns
            except FileNotFoundError:
                # A missing list is an error of the deployment, not a reason to let anyone in.
                log.error("revocation list %s is missing; refusing every site", self._path)
                return frozenset({"*"})
            if stamp != self._stamp:
                lines = self._path.read_text().splitlines()
                self._entries = frozenset(
                    line.split("#", 1)[0].strip().lower()
                    for line in lines
                    if line.split("#", 1)[0].strip()
                )
                self._stamp = stamp
            return self._entries


def peer_identity(context: grpc.ServicerContext) -> tuple[str | None, str | None]:
    """The peer certificate's common name and serial number (hex), if it showed one."""
    auth = context.auth_context()
    names = auth.get("x509_common_name") or []
    pems = auth.get("x509_pem_cert") or []
    name = names[0].decode() if len(names) == 1 else None
    serial = None
    if pems:
        serial = format(x509.load_pem_x509_certificate(pems[0]).serial_number, "x")
    return name, serial


def abort(
    context: grpc.ServicerContext, status: grpc.StatusCode, code: WireError, text: str
) -> NoReturn:
    """End the call with ``status``, the wire ``code`` in trailing metadata and a short text."""
    context.set_trailing_metadata(((ERROR_CODE_KEY, code.value),))
    context.abort(status, f"{code.value}: {text}")
    raise AssertionError("grpc's abort returned")  # it raises; this tells type checkers


class SiteAuthInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Refuses every call whose certificate names no allowed, unrevoked site.

    Parameters
    ----------
    allowed
        The sites of the federation.
    revoked
        The revocation list.
    """

    def __init__(self, *, allowed: Iterable[str], revoked: RevocationList) -> None:
        self._allowed = frozenset(allowed)
        self._revoked = revoked

    def check(self, context: grpc.ServicerContext) -> str | None:
        """The caller's site name, or ``None`` after aborting the call."""
        name, serial = peer_identity(context)
        if name is None:
            abort(context, grpc.StatusCode.UNAUTHENTICATED, WireError.NO_IDENTITY, "no certificate")
            return None
        revoked = self._revoked.entries()
        if "*" in revoked or name.lower() in revoked or (serial and serial.lower() in revoked):
            log.warning("refused revoked site %s (certificate serial %s)", name, serial)
            abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                WireError.REVOKED,
                f"'{name}' is revoked",
            )
            return None
        if name not in self._allowed:
            log.warning("refused site %s: not in deploy.sites", name)
            abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                WireError.NOT_ALLOWED,
                f"'{name}' is not a site of this federation",
            )
            return None
        return name

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        """Wrap the method's handler so the identity is checked before it runs."""
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        check = self.check

        def guard(behaviour: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
            def run(request: Any, context: grpc.ServicerContext) -> Any:
                if check(context) is None:
                    return None
                return behaviour(request, context)

            return run

        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                guard(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                guard(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                guard(handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
