"""Which sites a per-site figure draws by name once there are too many to draw them all.

Up to :data:`SITE_LIMIT` sites, every per-site figure draws every site. Past
it, a figure draws the :data:`NAMED` sites with the lowest and the
:data:`NAMED` with the highest score by name and summarises the rest (a box
and strip plot, or grey lines), so its cost no longer grows with the number of
sites; every site's numbers stay in the report's tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SITE_LIMIT = 12
NAMED = 3


@dataclass(frozen=True)
class SiteSelection:
    """The sites a figure names, and those it only summarises.

    Parameters
    ----------
    shown
        Sites drawn and named, sorted.
    summarised
        Sites drawn only as part of a summary, sorted (empty up to the limit).
    basis
        How ``shown`` was chosen, e.g. ``"the 3 lowest and the 3 highest federated ROC AUC"``.
    """

    shown: tuple[str, ...]
    summarised: tuple[str, ...]
    basis: str

    @property
    def summarising(self) -> bool:
        """Whether some sites are only summarised."""
        return bool(self.summarised)

    def note(self) -> str:
        """One sentence for the report: which sites are named and which are summarised."""
        if not self.summarising:
            return f"Every site is drawn ({len(self.shown)})."
        return (
            f"{len(self.shown) + len(self.summarised)} sites, more than {SITE_LIMIT}: named in "
            f"the figure are {', '.join(self.shown)} ({self.basis}); the other "
            f"{len(self.summarised)} ({', '.join(self.summarised)}) are summarised. Every "
            "site's numbers are in the tables."
        )


def select_sites(
    sites: Sequence[str],
    scores: Mapping[str, float],
    *,
    basis: str,
    limit: int = SITE_LIMIT,
    named: int = NAMED,
) -> SiteSelection:
    """Name every site up to ``limit``; past it, the ``named`` lowest and highest by score.

    Parameters
    ----------
    sites
        Every site of the run.
    scores
        A score per site (NaN or missing: not ranked). Ties go to the site
        name, so the choice is deterministic.
    basis
        What the score is, for the report (``"ROC AUC"``).
    limit
        The most sites a figure draws one by one.
    named
        How many sites to name at each end past the limit.
    """
    names = sorted(sites)
    if len(names) <= limit:
        return SiteSelection(shown=tuple(names), summarised=(), basis="every site")
    ranked = sorted(
        (s for s in names if not math.isnan(scores.get(s, math.nan))),
        key=lambda s: (scores[s], s),
    )
    if ranked:
        chosen = set(ranked[:named]) | set(ranked[-named:])
        how = f"the {named} lowest and the {named} highest {basis}"
    else:
        chosen = set(names[: 2 * named])
        how = f"the first {2 * named} by name ({basis} is not defined at any site)"
    return SiteSelection(
        shown=tuple(s for s in names if s in chosen),
        summarised=tuple(s for s in names if s not in chosen),
        basis=how,
    )
