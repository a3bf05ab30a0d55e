"""Protocol version, wire error codes and the metadata key that carries them."""

from __future__ import annotations

from enum import StrEnum

PROTOCOL_VERSION = 1
ERROR_CODE_KEY = "flmi-error-code"


class WireError(StrEnum):
    """Why a call was refused. Sent back as gRPC trailing metadata under ``ERROR_CODE_KEY``."""

    PROTOCOL_VERSION = "protocol_version"
    TASK_MISMATCH = "task_mismatch"
    SCHEMA_MISMATCH = "schema_mismatch"
    NOT_ALLOWED = "site_not_allowed"
    REVOKED = "site_revoked"
    NO_IDENTITY = "no_identity"
    NOT_REGISTERED = "not_registered"
    STRATEGY_REFUSED = "strategy_refused"
    HPARAM_REFUSED = "hparam_refused"
    ROUNDS_REFUSED = "rounds_refused"
    BAD_FRAME = "bad_frame"
    MESSAGE_TOO_LARGE = "message_too_large"
    NON_FINITE_UPDATE = "non_finite_update"
    STALE_TICKET = "stale_ticket"
    SHUTTING_DOWN = "shutting_down"
    STAGES_UNSUPPORTED = "stages_unsupported"
    AGGREGATION_REFUSED = "aggregation_refused"


class RefusalError(Exception):
    """A received message breaks the protocol; the call is refused with ``code``.

    Parameters
    ----------
    code
        The code sent back.
    message
        A short reason, sent back too: never a path or patient data.
    """

    def __init__(self, code: WireError, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
