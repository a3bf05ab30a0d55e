"""Client-side algorithms as plug-ins of the one site code path.

See :mod:`flmi.site.algorithms.base` for the interface and
:mod:`flmi.site.algorithms.registry` for how a site finds them.
"""

from flmi.site.algorithms.base import (
    ClientAlgorithm,
    ClientStep,
    LocalSite,
    LocalUpdate,
    PassStep,
    RoundContext,
)
from flmi.site.algorithms.registry import (
    client_algorithms,
    register_client_algorithm,
    start_round,
)

__all__ = [
    "ClientAlgorithm",
    "ClientStep",
    "LocalSite",
    "LocalUpdate",
    "PassStep",
    "RoundContext",
    "client_algorithms",
    "register_client_algorithm",
    "start_round",
]
