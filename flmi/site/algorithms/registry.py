"""The client algorithms a site knows, by name, in the order their steps run.

Every algorithm imported so far is asked each round whether the instruction
needs it (:meth:`ClientAlgorithm.start`). Those that shape local training are
named by the instruction's ``client_algorithm`` (``scaffold``, ``ifca``,
``feddyn``, ``moon``, or ``standard`` for none); the others run when their own
hyperparameter asks (``prox_mu`` > 0, ``keep_local``, ``personal``,
``dp = "sample"``).

:data:`CLIENT_ALGORITHMS` is a :class:`flmi.registry.Registry` like every
other kind of part: :func:`register_client_algorithm` (or
``CLIENT_ALGORITHMS.register``) adds one from a script, and an installed
package declares one in the entry-point group ``flmi.client_algorithms``. A
plug-in is imported the first time an instruction names it, so a hospital
needs the package only when its federation uses it. Its own hyperparameters
travel in the instruction as ``"<name>.<key>"`` (see
:meth:`flmi.tasks.base.LocalTraining.from_hparams`); the algorithm reads and
checks them in :meth:`ClientAlgorithm.start`.
"""

from __future__ import annotations

from collections.abc import Mapping

from flmi.core.keys import ClientAlgorithm as ClientAlgorithmName
from flmi.registry import BUILTIN_ORIGIN, PluginError, Registry
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


def _check_algorithm(name: str, part: object) -> None:
    """Refuse what is not a client algorithm, or one registered under another name."""
    if name == ClientAlgorithmName.STANDARD:
        raise PluginError("'standard' means no client algorithm; choose another name")
    start, own = getattr(part, "start", None), getattr(part, "name", None)
    if not callable(start) or not isinstance(own, str):
        raise PluginError(
            f"client algorithm '{name}' must have a 'name' and a 'start(context)' method "
            f"(flmi.site.algorithms.ClientAlgorithm), got {type(part).__name__}"
        )
    if own != name:
        raise PluginError(
            f"client algorithm '{name}' names itself '{own}'; register it under its own name"
        )


#: Every client algorithm by name. The built-in ones run in this order: IFCA loads
#: its cluster model before local layers are put back over it; penalties add up in
#: this order; the local layers leave the weights sent before Ditto trains the
#: personal model in the same working model. Plug-ins run after them.
CLIENT_ALGORITHMS: Registry[ClientAlgorithm] = Registry(
    kind="client algorithm",
    group="flmi.client_algorithms",
    field="client_algorithm",
    check=_check_algorithm,
)
for _builtin in (
    Ifca(),
    LocalLayers(),
    Proximal(),
    Scaffold(),
    FedDyn(),
    Moon(),
    SampleDP(),
    Ditto(),
):
    CLIENT_ALGORITHMS.register(_builtin.name, _builtin, origin=BUILTIN_ORIGIN)


def register_client_algorithm(algorithm: ClientAlgorithm, *, replace: bool = False) -> None:
    """Add ``algorithm`` under its own name (its steps run after the built-in ones).

    Parameters
    ----------
    algorithm
        The algorithm; an instruction whose ``client_algorithm`` is its name
        reaches its :meth:`ClientAlgorithm.start`, as every instruction does.
    replace
        Allow replacing an algorithm registered under the same name.

    Raises
    ------
    flmi.registry.PluginError
        The name is taken (and ``replace`` is false), is ``"standard"``, or the
        object is not a client algorithm.
    """
    CLIENT_ALGORITHMS.register(algorithm.name, algorithm, replace=replace)


def client_algorithms() -> Mapping[str, ClientAlgorithm]:
    """Every algorithm imported so far by name, in the order their steps run."""
    return dict(CLIENT_ALGORITHMS.loaded())


def start_round(context: RoundContext) -> list[ClientStep]:
    """The steps of every algorithm this round's instruction needs, in order.

    Raises
    ------
    HParamError
        ``client_algorithm`` names no registered algorithm, or an algorithm
        refuses one of its hyperparameters.
    """
    named = context.training.client_algorithm
    if named != ClientAlgorithmName.STANDARD:
        try:
            found = CLIENT_ALGORITHMS.get(named)  # imports a plug-in on first use
        except PluginError as exc:
            raise HParamError(str(exc)) from None
        if found is None:
            selectable = [ClientAlgorithmName.STANDARD.value, *CLIENT_ALGORITHMS.names()]
            raise HParamError(
                f"client_algorithm must be one of {selectable}, got '{named}'; a plug-in "
                "algorithm must be installed at the site (entry-point group "
                "'flmi.client_algorithms')"
            )
    steps = []
    for _name, algorithm in CLIENT_ALGORITHMS.loaded():
        step = algorithm.start(context)
        if step is not None:
            steps.append(step)
    return steps
