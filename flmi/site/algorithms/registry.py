"""The client algorithms a site knows, by name, in the order their steps run.

Every registered algorithm is asked each round whether the instruction needs
it (:meth:`ClientAlgorithm.start`). Those that shape local training are named
by the instruction's ``client_algorithm`` (``scaffold``, ``ifca``,
``feddyn``, ``moon``, or ``standard`` for none); the others run when their own
hyperparameter asks (``prox_mu`` > 0, ``keep_local``, ``personal``,
``dp = "sample"``). :func:`register_client_algorithm` adds one: a site then
runs it with no edit of its own code.
"""

from __future__ import annotations

from collections.abc import Mapping

from flmi.core.keys import ClientAlgorithm as ClientAlgorithmName
from flmi.site.algorithms.base import ClientAlgorithm, ClientStep, RoundContext
from flmi.site.algorithms.ditto import Ditto
from flmi.site.algorithms.dp_sgd import SampleDP
from flmi.site.algorithms.feddyn import FedDyn
from flmi.site.algorithms.ifca import Ifca
from flmi.site.algorithms.local_layers import LocalLayers
from flmi.site.algorithms.moon import Moon
from flmi.site.algorithms.proximal import Proximal
from flmi.site.algorithms.scaffold import Scaffold
from flmi.tasks.base import HParamError

# The order steps run in: IFCA loads its cluster model before local layers are put back
# over it; penalties add up in this order; the local layers leave the weights sent
# before Ditto trains the personal model in the same working model.
_ALGORITHMS: dict[str, ClientAlgorithm] = {
    a.name: a
    for a in (
        Ifca(),
        LocalLayers(),
        Proximal(),
        Scaffold(),
        FedDyn(),
        Moon(),
        SampleDP(),
        Ditto(),
    )
}


def register_client_algorithm(algorithm: ClientAlgorithm, *, replace: bool = False) -> None:
    """Add ``algorithm`` (its steps run after the built-in ones).

    Parameters
    ----------
    algorithm
        The algorithm; an instruction whose ``client_algorithm`` is its name
        reaches its :meth:`ClientAlgorithm.start`, as every instruction does.
    replace
        Allow replacing an algorithm registered under the same name.

    Raises
    ------
    ValueError
        The name is taken (and ``replace`` is false) or is ``"standard"``.
    """
    name = algorithm.name
    if name == ClientAlgorithmName.STANDARD:
        raise ValueError("'standard' means no client algorithm; choose another name")
    if name in _ALGORITHMS and not replace:
        raise ValueError(f"a client algorithm named '{name}' is already registered")
    _ALGORITHMS[name] = algorithm


def client_algorithms() -> Mapping[str, ClientAlgorithm]:
    """Every registered algorithm by name, in the order their steps run."""
    return dict(_ALGORITHMS)


def start_round(context: RoundContext) -> list[ClientStep]:
    """The steps of every algorithm this round's instruction needs, in order.

    Raises
    ------
    HParamError
        ``client_algorithm`` names no registered algorithm, or an algorithm
        refuses one of its hyperparameters.
    """
    named = context.training.client_algorithm
    selectable = [ClientAlgorithmName.STANDARD.value, *_ALGORITHMS]
    if named not in selectable:
        raise HParamError(f"client_algorithm must be one of {selectable}, got '{named}'")
    steps = []
    for algorithm in _ALGORITHMS.values():
        step = algorithm.start(context)
        if step is not None:
            steps.append(step)
    return steps
