"""Server-side differential privacy: wrappers around a strategy, with their ledgers.

:class:`SampleDP` asks every site to train with DP-SGD and keeps a ledger of
what each site reports it spent. :class:`ClientDP` is DP-FedAvg (McMahan et
al., "Learning Differentially Private Recurrent Language Models", ICLR 2018):
each site's update is clipped, the clipped updates are summed, Gaussian noise
is added, and the sum over the expected number of sites is handed to the
wrapped strategy as one delta, whose server rule (FedAvg's replacement,
server momentum, FedAdam, ...) then moves the global model.

Both keep their state explicit (:class:`PrivateState`) and checkpoint it with
the wrapped strategy's own, so a resumed run continues the accounting.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from flmi.config import PrivacyConfig
from flmi.core.errors import ConfigError
from flmi.core.keys import DPMode, Extra, HParam, PrivacyKey
from flmi.core.messages import ClientUpdate, HParamValue, TrainInstruction, UpdateKind
from flmi.core.params import Params, copy_params, subtract
from flmi.core.strategy import (
    Capabilities,
    JSONValue,
    StateRecord,
    Strategy,
    capabilities_of,
)
from flmi.privacy.accounting import Ledger, json_epsilon, noise_for_epsilon
from flmi.privacy.clip import clip_to_norm, gaussian_noise, update_noise_multiplier
from flmi.privacy.compat import SERVER_NOISE_REFUSAL, secagg_max_clip, secagg_noise_room
from flmi.privacy.noise_source import NoiseSource

#: Key of the privacy block inside a checkpointed strategy record's meta.
META_KEY = "privacy"
#: Prefix of the global weights ClientDP keeps in a checkpoint.
PARAMS_PREFIX = "dp.params/"


@dataclass(frozen=True)
class PrivateState:
    """A DP wrapper's state: the wrapped strategy's, plus the privacy bookkeeping.

    Parameters
    ----------
    inner
        The wrapped strategy's state.
    ledgers
        Each site's spending (what the released models reveal about its data).
    server_view
        Each site's spending against the server itself, where noise is added
        at the sites (empty otherwise).
    clip_norm
        DP-FedAvg's current clip (adaptive clipping moves it).
    params
        The current global weights (DP-FedAvg clips deltas from them).
    secure_round
        The round whose sum arrived through secure or homomorphic aggregation
        and was accounted for by :meth:`note_secure_round` (0: none yet).
    secure_sites
        The sites whose updates that round's sum holds.
    """

    inner: Any
    ledgers: Mapping[str, Ledger] = field(default_factory=dict)
    server_view: Mapping[str, Ledger] = field(default_factory=dict)
    clip_norm: float = 0.0
    params: Params = field(default_factory=dict)
    secure_round: int = 0
    secure_sites: tuple[str, ...] = ()


class _Wrapper(ABC):
    """What every DP wrapper forwards to the strategy it wraps."""

    def __init__(self, *, inner: Strategy[Any], delta: float, accountant: str) -> None:
        self._inner = inner
        self._delta = delta
        self._accountant = accountant

    @property
    def name(self) -> str:
        """The wrapped strategy's name."""
        return self._inner.name

    @property
    def capabilities(self) -> Capabilities:
        """The wrapped strategy's capabilities, plus privacy reporting and secure-round accounting.

        What the wrapped strategy declares is passed on, reading its part of
        the :class:`PrivateState`; a secure round is accounted for by this
        wrapper, then by the wrapped strategy if it accounts for one too.
        """
        inner = capabilities_of(self._inner)
        site_params = inner.site_params
        inner_note = inner.note_secure_round

        def through(state: PrivateState, site: str) -> Params:
            assert site_params is not None
            return site_params(state.inner, site)

        def note(
            rnd: int,
            state: PrivateState,
            *,
            reports: Mapping[str, Mapping[str, float]],
            contributors: Sequence[str],
        ) -> PrivateState:
            noted = self.note_secure_round(rnd, state, reports=reports, contributors=contributors)
            if inner_note is None:
                return noted
            inner_state = inner_note(rnd, noted.inner, reports=reports, contributors=contributors)
            return replace(noted, inner=inner_state)

        return replace(
            inner,
            site_params=through if site_params is not None else None,
            privacy_record=self.privacy_record,
            note_secure_round=note,
        )

    @abstractmethod
    def note_secure_round(
        self,
        rnd: int,
        state: PrivateState,
        *,
        reports: Mapping[str, Mapping[str, float]],
        contributors: Sequence[str],
    ) -> PrivateState:
        """The state with a secure round's contributions accounted for."""

    @abstractmethod
    def privacy_record(self, state: PrivateState) -> dict[str, JSONValue]:
        """Epsilon so far, overall and per site, and the settings it was spent at."""

    def _site_block(self, state: PrivateState) -> dict[str, JSONValue]:
        sites: dict[str, JSONValue] = {}
        for site, ledger in sorted(state.ledgers.items()):
            entry: dict[str, JSONValue] = {
                "epsilon": json_epsilon(
                    ledger.epsilon(delta=self._delta, accountant=self._accountant)
                ),
                "steps": ledger.steps,
                "history": ledger.to_json(),  # type: ignore[dict-item]
            }
            if site in state.server_view:
                entry["epsilon_against_server"] = json_epsilon(
                    state.server_view[site].epsilon(delta=self._delta, accountant=self._accountant)
                )
            sites[site] = entry
        return sites

    def _state_record(self, state: PrivateState, extra: Mapping[str, JSONValue]) -> StateRecord:
        inner = self._inner.state_to_record(state.inner)
        block: dict[str, JSONValue] = {
            "ledgers": {s: led.to_json() for s, led in sorted(state.ledgers.items())},  # type: ignore[misc]
            "server_view": {s: led.to_json() for s, led in sorted(state.server_view.items())},  # type: ignore[misc]
            "clip_norm": state.clip_norm,
            **extra,
        }
        tensors = dict(inner.tensors)
        tensors.update({PARAMS_PREFIX + k: v for k, v in sorted(state.params.items())})
        return StateRecord(tensors=tensors, meta={**inner.meta, META_KEY: block})

    def _read_record(self, record: StateRecord) -> PrivateState:
        meta = dict(record.meta)
        block = meta.pop(META_KEY, None)
        if not isinstance(block, dict):
            raise ValueError(
                "the checkpoint holds no privacy ledger; it was written without [privacy] dp, "
                "so it cannot be resumed with it"
            )
        tensors = {k: v for k, v in record.tensors.items() if not k.startswith(PARAMS_PREFIX)}
        params = {
            k[len(PARAMS_PREFIX) :]: np.array(v, copy=True)
            for k, v in record.tensors.items()
            if k.startswith(PARAMS_PREFIX)
        }
        inner = self._inner.state_from_record(StateRecord(tensors=tensors, meta=meta))

        def ledgers(key: str) -> dict[str, Ledger]:
            raw = block.get(key) or {}
            assert isinstance(raw, dict)
            return {s: Ledger.from_json(v) for s, v in raw.items()}  # type: ignore[arg-type]

        clip = block.get("clip_norm", 0.0)
        assert isinstance(clip, int | float)
        return PrivateState(
            inner=inner,
            ledgers=ledgers("ledgers"),
            server_view=ledgers("server_view"),
            clip_norm=float(clip),
            params=params,
        )

    def state_from_record(self, record: StateRecord) -> PrivateState:
        """Rebuild the state written by :meth:`state_to_record`."""
        return self._read_record(record)


class SampleDP(_Wrapper):
    """Every site trains with DP-SGD; the server keeps each site's ledger.

    The sites run Opacus (:mod:`flmi.privacy.dp_sgd`) and report, with each
    update, the noise multiplier, sample rate and steps their optimiser used;
    the server feeds those to its own Opacus accountant per site.

    Parameters
    ----------
    inner
        The strategy whose sites train privately.
    noise_multiplier, max_grad_norm
        DP-SGD's noise multiplier and per-example clip.
    delta, accountant
        Epsilon is reported at ``delta`` by Opacus's ``accountant``.
    target_epsilon
        If set, each site picks the noise multiplier that spends it after
        ``rounds`` rounds.
    rounds
        Rounds the run plans.
    """

    def __init__(
        self,
        *,
        inner: Strategy[Any],
        noise_multiplier: float,
        max_grad_norm: float,
        delta: float,
        accountant: str,
        target_epsilon: float | None,
        rounds: int,
    ) -> None:
        super().__init__(inner=inner, delta=delta, accountant=accountant)
        self._hparams: dict[str, HParamValue] = {
            HParam.DP: DPMode.SAMPLE.value,
            HParam.DP_NOISE_MULTIPLIER: noise_multiplier,
            HParam.DP_MAX_GRAD_NORM: max_grad_norm,
            HParam.DP_DELTA: delta,
            HParam.DP_ACCOUNTANT: accountant,
            HParam.DP_TARGET_EPSILON: target_epsilon or 0.0,
            HParam.DP_ROUNDS: rounds,
        }

    def init(self, params: Params) -> PrivateState:
        """The wrapped strategy's initial state and empty ledgers."""
        return PrivateState(inner=self._inner.init(params))

    def configure(
        self, rnd: int, state: PrivateState, sites: Sequence[str]
    ) -> Mapping[str, TrainInstruction]:
        """The wrapped strategy's instructions, each asking for DP-SGD."""
        out = self._inner.configure(rnd, state.inner, sites)
        return {
            s: replace(i, hparams={**i.hparams, **self._hparams}) for s, i in sorted(out.items())
        }

    def note_secure_round(
        self,
        rnd: int,
        state: PrivateState,
        *,
        reports: Mapping[str, Mapping[str, float]],
        contributors: Sequence[str],
    ) -> PrivateState:
        """Charge each contributor what its DP-SGD report says it spent.

        Under secure or homomorphic aggregation the update is hidden, but each
        site's report (noise multiplier, sample rate, steps: aggregate numbers
        from its own ledger) travels in the clear with its training metrics.
        """
        ledgers = dict(state.ledgers)
        for site in sorted(contributors):
            ledgers[site] = _charge(ledgers.get(site, Ledger()), reports.get(site, {}), site, rnd)
        return replace(state, ledgers=ledgers, secure_round=rnd, secure_sites=tuple(contributors))

    def aggregate(
        self, rnd: int, state: PrivateState, updates: Sequence[ClientUpdate]
    ) -> tuple[PrivateState, Params]:
        """Aggregate as the wrapped strategy does; add what each site spent to its ledger."""
        ledgers = dict(state.ledgers)
        if state.secure_round != rnd:  # a secure round was charged by note_secure_round
            for update in sorted(updates, key=lambda u: u.site):
                ledgers[update.site] = _charge(
                    ledgers.get(update.site, Ledger()), update.metrics, update.site, rnd
                )
        inner, params = self._inner.aggregate(rnd, state.inner, updates)
        return replace(state, inner=inner, ledgers=ledgers, secure_round=0, secure_sites=()), params

    def state_to_record(self, state: PrivateState) -> StateRecord:
        """The wrapped strategy's record, with the ledgers in its meta."""
        return self._state_record(state, {})

    def privacy_record(self, state: PrivateState) -> dict[str, JSONValue]:
        """Epsilon so far: the largest any site has spent, and each site's own."""
        sites = self._site_block(state)
        spent = [v["epsilon"] for v in sites.values() if isinstance(v, dict)]
        finite = [e for e in spent if isinstance(e, float | int)]
        return {
            "dp": DPMode.SAMPLE.value,
            "delta": self._delta,
            "accountant": self._accountant,
            "epsilon": max(finite) if finite else 0.0,
            "sites": sites,
        }


def _charge(ledger: Ledger, report: Mapping[str, float], site: str, rnd: int) -> Ledger:
    """``ledger`` plus one round of the DP-SGD ``report`` a site sent."""
    needed = (PrivacyKey.NOISE_MULTIPLIER, PrivacyKey.SAMPLE_RATE, PrivacyKey.STEPS)
    if not all(k in report for k in needed):
        raise ValueError(
            f"round {rnd}: site '{site}' sent no DP-SGD report; "
            "every site must train with DP-SGD under privacy.dp = 'sample'"
        )
    return ledger.add(
        noise_multiplier=float(report[PrivacyKey.NOISE_MULTIPLIER]),
        sample_rate=float(report[PrivacyKey.SAMPLE_RATE]),
        steps=int(report[PrivacyKey.STEPS]),
    )


@dataclass(frozen=True)
class ClientDPSettings:
    """DP-FedAvg's settings.

    Parameters
    ----------
    noise_multiplier
        Noise std over the clip, for the whole release (update and, with
        adaptive clipping, the count of unclipped updates together).
    clip_norm
        The clip (the initial one, with adaptive clipping).
    noise_at
        ``"server"`` (a trusted server adds the noise) or ``"site"`` (each of
        the ``m`` sites adds N(0, (z C)^2 / m), so the sum carries N(0, (z C)^2)).
    adaptive_clip
        Move the clip toward the ``adaptive_clip_quantile`` of update norms.
    adaptive_clip_quantile, adaptive_clip_lr, adaptive_clip_count_noise
        Andrew et al. (2021)'s target quantile, geometric learning rate and
        the noise std of the count of unclipped updates.
    max_clip_norm
        The most the adaptive clip may grow to (``None``: no bound). Under
        secure aggregation it keeps a site's noised change inside the
        fixed-point range; the bound is public, so capping costs no privacy.
    """

    noise_multiplier: float
    clip_norm: float
    noise_at: str = "server"
    adaptive_clip: bool = False
    adaptive_clip_quantile: float = 0.5
    adaptive_clip_lr: float = 0.2
    adaptive_clip_count_noise: float = 1.0
    max_clip_norm: float | None = None

    @property
    def update_noise_multiplier(self) -> float:
        """The part of the noise multiplier the update itself gets."""
        return update_noise_multiplier(
            noise_multiplier=self.noise_multiplier,
            count_noise=self.adaptive_clip_count_noise if self.adaptive_clip else None,
        )


class ClientDP(_Wrapper):
    """DP-FedAvg: clip each site's update, add Gaussian noise to the sum.

    Per round, with ``m`` the expected number of sites and ``C`` the clip:
    ``delta = (sum_i clip(delta_i, C) + N(0, (z_u C)^2)) / m`` is passed to the
    wrapped strategy as one update; its server rule moves the global model.
    With adaptive clipping (Andrew et al., NeurIPS 2021) the clip then moves
    by ``C <- C exp(-lr (b - quantile))``, ``b`` being the noised share of
    updates that were not clipped.

    Accounting is per site and honest about sampling: sites are chosen by a
    public, data-independent schedule, so each round a site took part in
    counts as one step at sample rate 1 (no amplification is claimed); with
    every hospital in every round, epsilon grows with the rounds as it does.
    With noise at the sites and fewer updates than expected, the noise that
    arrived is what is counted. Against the server, where noise is added at
    the sites, each site's own update carries only its share of the noise: that
    is reported beside it as ``epsilon_against_server``.

    Parameters
    ----------
    inner
        A strategy whose aggregate is a mean of updates plus a server rule.
    settings
        Clip, noise and where it is added.
    delta, accountant
        Epsilon is reported at ``delta`` by Opacus's ``accountant``.
    sites_per_round
        ``m``: the number of sites sampled every round.
    noise
        Where the server's noise (update and count, with ``noise_at =
        "server"``) comes from: :class:`NoiseSource` ``()`` is fresh OS
        randomness each round, never the run seed.
    """

    def __init__(
        self,
        *,
        inner: Strategy[Any],
        settings: ClientDPSettings,
        delta: float,
        accountant: str,
        sites_per_round: int,
        noise: NoiseSource,
    ) -> None:
        super().__init__(inner=inner, delta=delta, accountant=accountant)
        if sites_per_round < 1:
            raise ValueError(f"sites_per_round must be at least 1, got {sites_per_round}")
        self._settings = settings
        self._z_update = settings.update_noise_multiplier
        self._m = sites_per_round
        self._noise = noise

    def init(self, params: Params) -> PrivateState:
        """The wrapped strategy's initial state, the initial clip and empty ledgers."""
        return PrivateState(
            inner=self._inner.init(params),
            clip_norm=self._settings.clip_norm,
            params=copy_params(params),
        )

    def configure(
        self, rnd: int, state: PrivateState, sites: Sequence[str]
    ) -> Mapping[str, TrainInstruction]:
        """The wrapped strategy's instructions; with noise at the sites, their share of it."""
        out = dict(self._inner.configure(rnd, state.inner, sites))
        if self._settings.noise_at != "site":
            return out
        extra: dict[str, HParamValue] = {
            HParam.DP: DPMode.CLIENT.value,
            HParam.DP_CLIP_NORM: state.clip_norm,
            HParam.DP_NOISE_MULTIPLIER: self._z_update,
            HParam.DP_NUM_SITES: self._m,
            HParam.DP_COUNT_NOISE: (
                self._settings.adaptive_clip_count_noise if self._settings.adaptive_clip else 0.0
            ),
        }
        return {s: replace(i, hparams={**i.hparams, **extra}) for s, i in sorted(out.items())}

    def note_secure_round(
        self,
        rnd: int,
        state: PrivateState,
        *,
        reports: Mapping[str, Mapping[str, float]],
        contributors: Sequence[str],
    ) -> PrivateState:
        """Remember which sites this round's secure sum holds (their ledgers are charged)."""
        del reports  # DP-FedAvg's accounting needs no site report
        if self._settings.noise_at != "site":
            raise ValueError(
                f"round {rnd}: privacy.noise_at = 'server' clips each site's update at the "
                "server, which a secure or homomorphic sum hides; use privacy.noise_at = 'site'"
            )
        return replace(state, secure_round=rnd, secure_sites=tuple(sorted(contributors)))

    def aggregate(
        self, rnd: int, state: PrivateState, updates: Sequence[ClientUpdate]
    ) -> tuple[PrivateState, Params]:
        """Clip, sum, noise, average over the expected sites; step the wrapped strategy.

        After :meth:`note_secure_round` the one update is the mean of the
        contributors' clipped, noised changes (each counted once), with the
        sum of their noised "not clipped" bits as an extra.
        """
        if not updates:
            raise ValueError(f"round {rnd}: DP-FedAvg needs at least one update")
        if state.secure_round == rnd:
            return self._aggregate_sum(rnd, state, updates)
        ordered = sorted(updates, key=lambda u: u.site)
        clip = state.clip_norm
        at_site = self._settings.noise_at == "site"
        rng = self._noise.numpy_generator(party="server", rnd=rnd, purpose="dp-noise")
        total: dict[str, np.ndarray] = {
            k: np.zeros(v.shape, np.float64) for k, v in state.params.items()
        }
        unclipped = 0.0
        for update in ordered:
            if at_site:
                if update.kind is not UpdateKind.DELTA or Extra.DP_UNCLIPPED not in update.extras:
                    raise ValueError(
                        f"round {rnd}: site '{update.site}' did not clip and noise its own "
                        "update; with privacy.noise_at = 'site' every site must"
                    )
                delta = update.params
                unclipped += float(np.sum(update.extras[Extra.DP_UNCLIPPED]))
            else:
                raw = (
                    update.params
                    if update.kind is UpdateKind.DELTA
                    else subtract(update.params, state.params)
                )
                delta, norm = clip_to_norm(raw, clip)
                unclipped += 1.0 if norm <= clip else 0.0
            for k in total:
                total[k] += np.asarray(delta[k], dtype=np.float64)
        if not at_site:
            noise = gaussian_noise(total, std=self._z_update * clip, rng=rng)
            for k in total:
                total[k] += noise[k]
            if self._settings.adaptive_clip:
                unclipped += float(rng.normal(0.0, self._settings.adaptive_clip_count_noise))
        mean = {
            k: (total[k] / self._m).astype(state.params[k].dtype, copy=False) for k in sorted(total)
        }
        pseudo = ClientUpdate(
            site="dp-fedavg",
            params=mean,
            kind=UpdateKind.DELTA,
            num_examples=1,
            num_steps=max(u.num_steps for u in ordered),
            metrics={},
        )
        inner, params = self._inner.aggregate(rnd, state.inner, [pseudo])
        new_clip = self._next_clip(clip, unclipped)
        arrived = len(ordered) / self._m
        z_release = self._settings.noise_multiplier * (math.sqrt(arrived) if at_site else 1.0)
        ledgers, seen = dict(state.ledgers), dict(state.server_view)
        for update in ordered:
            ledgers[update.site] = ledgers.get(update.site, Ledger()).add(
                noise_multiplier=z_release, sample_rate=1.0, steps=1
            )
            if at_site:
                seen[update.site] = seen.get(update.site, Ledger()).add(
                    noise_multiplier=self._settings.noise_multiplier / math.sqrt(self._m),
                    sample_rate=1.0,
                    steps=1,
                )
        new_state = PrivateState(
            inner=inner, ledgers=ledgers, server_view=seen, clip_norm=new_clip, params=params
        )
        return new_state, params

    def _next_clip(self, clip: float, unclipped: float) -> float:
        """The clip after a round with ``unclipped`` (noised) updates under it."""
        if not self._settings.adaptive_clip:
            return clip
        share = unclipped / self._m
        moved = clip * math.exp(
            -self._settings.adaptive_clip_lr * (share - self._settings.adaptive_clip_quantile)
        )
        bound = self._settings.max_clip_norm
        return moved if bound is None else min(moved, bound)

    def _aggregate_sum(
        self, rnd: int, state: PrivateState, updates: Sequence[ClientUpdate]
    ) -> tuple[PrivateState, Params]:
        """A round whose sites' noised changes arrived summed (secure or homomorphic)."""
        if len(updates) != 1:
            raise ValueError(
                f"round {rnd}: a secure round gives one summed update, not {len(updates)}"
            )
        (summed,) = updates
        if summed.kind is not UpdateKind.DELTA or Extra.DP_UNCLIPPED not in summed.extras:
            raise ValueError(
                f"round {rnd}: the secure sum holds no clipped, noised changes; with "
                "privacy.noise_at = 'site' every site must clip and noise its own update"
            )
        count = int(summed.num_examples)  # every site counts once under DP-FedAvg's rule
        if count < 1:
            raise ValueError(f"round {rnd}: the secure sum holds {count} sites")
        mean = {
            k: (np.asarray(summed.params[k], np.float64) * count / self._m).astype(
                state.params[k].dtype, copy=False
            )
            for k in sorted(state.params)
        }
        pseudo = replace(summed, site="dp-fedavg", params=mean, num_examples=1, extras={})
        inner, params = self._inner.aggregate(rnd, state.inner, [pseudo])
        unclipped = float(np.sum(summed.extras[Extra.DP_UNCLIPPED]))
        new_clip = self._next_clip(state.clip_norm, unclipped)
        # The sum carries the noise of the sites in it: N(0, (z C)^2 count / m). The server
        # sees that sum only, so against it each site has the released model's guarantee.
        z_release = self._settings.noise_multiplier * math.sqrt(count / self._m)
        ledgers, seen = dict(state.ledgers), dict(state.server_view)
        for site in state.secure_sites:
            ledgers[site] = ledgers.get(site, Ledger()).add(
                noise_multiplier=z_release, sample_rate=1.0, steps=1
            )
            seen[site] = seen.get(site, Ledger()).add(
                noise_multiplier=z_release, sample_rate=1.0, steps=1
            )
        new_state = PrivateState(
            inner=inner, ledgers=ledgers, server_view=seen, clip_norm=new_clip, params=params
        )
        return new_state, params

    def state_to_record(self, state: PrivateState) -> StateRecord:
        """The wrapped strategy's record, plus the global weights, the clip and the ledgers."""
        return self._state_record(state, {})

    def privacy_record(self, state: PrivateState) -> dict[str, JSONValue]:
        """Epsilon so far (the most any site spent), each site's own, and the clip."""
        sites = self._site_block(state)
        spent = [v["epsilon"] for v in sites.values() if isinstance(v, dict)]
        finite = [e for e in spent if isinstance(e, float | int)]
        return {
            "dp": DPMode.CLIENT.value,
            "delta": self._delta,
            "accountant": self._accountant,
            "noise_at": self._settings.noise_at,
            "noise_multiplier": self._settings.noise_multiplier,
            "sample_rate": 1.0,
            "clip_norm": state.clip_norm,
            "epsilon": max(finite) if finite else 0.0,
            "sites": sites,
        }


def client_noise_multiplier(
    *,
    noise_multiplier: float,
    target_epsilon: float | None,
    delta: float,
    rounds: int,
    accountant: str,
) -> float:
    """The configured noise multiplier, or the one Opacus finds for ``target_epsilon``.

    DP-FedAvg's accounting uses sample rate 1 and one step per round.
    """
    if target_epsilon is None:
        return noise_multiplier
    try:
        return noise_for_epsilon(
            target_epsilon=target_epsilon,
            delta=delta,
            sample_rate=1.0,
            steps=rounds,
            accountant=accountant,
        )
    except ValueError as exc:
        raise ConfigError(f"privacy.target_epsilon = {target_epsilon}: {exc}") from None


def with_privacy(
    strategy: Strategy[Any],
    *,
    privacy: PrivacyConfig,
    rounds: int,
    sites_per_round: int,
    seed: int,
) -> Strategy[Any]:
    """``strategy`` wrapped for the configured ``[privacy] dp`` (unchanged for ``"none"``).

    The server's DP-FedAvg noise is OS randomness, unless
    ``privacy.insecure_reproducible_noise`` derives it from ``seed`` (tests only).
    """
    if privacy.dp == "sample":
        return SampleDP(
            inner=strategy,
            noise_multiplier=privacy.noise_multiplier,
            max_grad_norm=privacy.max_grad_norm,
            delta=privacy.delta,
            accountant=privacy.accountant,
            target_epsilon=privacy.target_epsilon,
            rounds=rounds,
        )
    if privacy.dp == "client":
        z = client_noise_multiplier(
            noise_multiplier=privacy.noise_multiplier,
            target_epsilon=privacy.target_epsilon,
            delta=privacy.delta,
            rounds=rounds,
            accountant=privacy.accountant,
        )
        settings = ClientDPSettings(
            noise_multiplier=z,
            clip_norm=privacy.clip_norm,
            noise_at=privacy.noise_at,
            adaptive_clip=privacy.adaptive_clip,
            adaptive_clip_quantile=privacy.adaptive_clip_quantile,
            adaptive_clip_lr=privacy.adaptive_clip_lr,
            adaptive_clip_count_noise=privacy.adaptive_clip_count_noise,
        )
        try:
            z_update = settings.update_noise_multiplier
        except ValueError as exc:
            raise ConfigError(f"privacy.adaptive_clip_count_noise: {exc}") from None
        if privacy.aggregation != "plain" and privacy.noise_at != "site":
            raise ConfigError(
                f"privacy.aggregation = '{privacy.aggregation}': {SERVER_NOISE_REFUSAL}"
            )
        if privacy.aggregation == "secagg":
            count_noise = privacy.adaptive_clip_count_noise if privacy.adaptive_clip else None
            problem = secagg_noise_room(
                secagg_clip=privacy.secagg_clip,
                clip_norm=privacy.clip_norm,
                update_noise_multiplier=z_update,
                count_noise=count_noise,
                sites=sites_per_round,
            )
            if problem is not None:
                raise ConfigError(problem)
            bound = secagg_max_clip(
                secagg_clip=privacy.secagg_clip,
                update_noise_multiplier=z_update,
                sites=sites_per_round,
            )
            settings = replace(settings, max_clip_norm=bound)
        return ClientDP(
            inner=strategy,
            settings=settings,
            delta=privacy.delta,
            accountant=privacy.accountant,
            sites_per_round=sites_per_round,
            noise=NoiseSource.for_run(
                insecure_reproducible=privacy.insecure_reproducible_noise, seed=seed
            ),
        )
    return strategy
