"""Did-you-mean hints for a misspelt name: the nearest valid one, then all of them on one line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def nearest(name: str, choices: Iterable[str]) -> str | None:
    """The valid name closest to ``name``, or ``None`` when none is close.

    Closeness is :func:`difflib.get_close_matches` with its default cutoff
    (0.6), ignoring case, so ``Rounds`` and ``roundz`` both find ``rounds``.
    """
    by_folded = {choice.casefold(): choice for choice in sorted(set(choices), reverse=True)}
    found = difflib.get_close_matches(name.casefold(), list(by_folded), n=1)
    return by_folded[found[0]] if found else None


def suggest(name: str, choices: Iterable[str], rest: str, *, shown: str = "'{}'") -> str:
    """``rest``, led by ``"did you mean 'x'? "`` when a valid name is close to ``name``.

    Parameters
    ----------
    name
        The name that was given.
    choices
        The valid names.
    rest
        What follows the hint, usually the valid names (:func:`one_line`); its
        first letter is capitalised after a hint.
    shown
        How the suggested name is written, ``{}`` standing for it: ``"'{}'"``
        by default, ``"'federation.{}'"`` to give a key its table.

    Examples
    --------
    >>> suggest("roundz", ["rounds", "seed"], "it takes: rounds, seed", shown="'federation.{}'")
    "did you mean 'federation.rounds'? It takes: rounds, seed"
    """
    match = nearest(name, choices)
    if match is None:
        return rest
    return f"did you mean {shown.replace('{}', match)}? {rest[:1].upper()}{rest[1:]}"


def one_line(choices: Iterable[str], *, quote: str = "'") -> str:
    """Every valid name, sorted and comma-separated on one line: ``'a', 'b', 'c'``."""
    return ", ".join(f"{quote}{choice}{quote}" for choice in sorted(set(choices)))
