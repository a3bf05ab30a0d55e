"""Where privacy noise comes from: the operating system's CSPRNG, never the run seed.

Every draw that protects privacy (DP-SGD's gradient noise at a site, a site's
share of DP-FedAvg's noise, the server's DP-FedAvg noise, the noise on
adaptive clipping's count of unclipped updates) takes its generator from a
:class:`NoiseSource`. By default each generator's state is fresh randomness
from the operating system (:mod:`secrets`), drawn anew for every site, round
and purpose (and, for DP-SGD, every optimiser step), never stored and never
derived from the config, a site's name or the round: nobody, the server
included, can regenerate the noise from what the run directory holds.

* numpy draws (DP-FedAvg): a PCG64 generator seeded with 128 bits from the
  OS, one per draw.
* torch draws (DP-SGD through Opacus): torch's CPU generator is a Mersenne
  Twister whose ``manual_seed`` keeps only 32 bits of a seed (2^32 seeds can
  be searched), so its whole 19 968-bit state is filled from the OS instead,
  before every step; a CUDA generator (Philox) gets a 64-bit seed and a
  random offset, other devices a 64-bit seed. Opacus's ``secure_mode`` is
  on, so each noise value is the sum of several Gaussian draws (robust to
  floating-point attacks).

Data shuffling, Poisson sampling and the other training randomness stay
seeded by the run: they protect nobody, and they make runs comparable.

``privacy.insecure_reproducible_noise = true`` gives :meth:`NoiseSource.seeded`,
the noise of earlier flmi versions (derived from the run seed, the party and
the round), for reproducible tests only: it carries no privacy guarantee, and
``flmi server`` and ``flmi client`` refuse it.
"""

from __future__ import annotations

import logging
import secrets
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from flmi.core.errors import ConfigError
from flmi.core.rng import generator

if TYPE_CHECKING:
    import torch

log = logging.getLogger("flmi.privacy")

#: What ``summary.json`` and the model card say of a run with seeded noise.
NO_GUARANTEE = (
    "no privacy guarantee: privacy.insecure_reproducible_noise = true drew the DP noise "
    "from the run seed, so anyone holding the config can regenerate and remove it"
)
#: Where the noise of a secure run came from (``summary.json``).
FROM_OS = "os_csprng"
#: Where the noise of an insecure, reproducible run came from (``summary.json``).
FROM_SEED = "run_seed"

# torch's CPU generator state: a legacy header (initial seed u64, left i32, seeded i32,
# next u64), then the 624 Mersenne Twister words, each a u32 stored in a u64.
_MT_WORDS = 624
_MT_OFFSET = 24
_CPU_STATE_BYTES = 5056


@dataclass(frozen=True)
class NoiseSource:
    """Generators for privacy noise, secure unless a reproducible seed is given.

    Parameters
    ----------
    reproducible_seed
        ``None`` (the default): every generator is fresh OS randomness. An
        integer: generators derived from it, the party and the round, so a
        run's noise repeats exactly; this gives no privacy at all (anyone
        with the seed removes the noise) and is for tests only.
    """

    reproducible_seed: int | None = None

    @classmethod
    def seeded(cls, *, seed: int) -> NoiseSource:
        """Noise derived from ``seed``: reproducible, and with no privacy guarantee."""
        return cls(reproducible_seed=seed)

    @classmethod
    def for_run(cls, *, insecure_reproducible: bool, seed: int) -> NoiseSource:
        """The source a run's ``privacy.insecure_reproducible_noise`` asks for."""
        return cls.seeded(seed=seed) if insecure_reproducible else cls()

    @property
    def is_secure(self) -> bool:
        """Whether the noise is OS randomness that nobody can regenerate."""
        return self.reproducible_seed is None

    @property
    def origin(self) -> str:
        """``"os_csprng"`` or ``"run_seed"``, as ``summary.json`` records it."""
        return FROM_OS if self.is_secure else FROM_SEED

    def numpy_generator(self, *, party: str, rnd: int, purpose: str) -> np.random.Generator:
        """A numpy generator for one draw of ``party`` in round ``rnd``.

        Secure: 128 fresh bits from the OS (``party``, ``rnd`` and ``purpose``
        play no part). Seeded: :func:`flmi.core.rng.generator` of them.
        """
        if self.reproducible_seed is None:
            entropy = np.random.SeedSequence(secrets.randbits(128))
            return np.random.Generator(np.random.PCG64(entropy))
        return generator(seed=self.reproducible_seed, party=party, rnd=rnd, purpose=purpose)

    def torch_generator(
        self, *, device: torch.device, training: torch.Generator
    ) -> torch.Generator:
        """DP-SGD's noise generator for one round of local training on ``device``.

        One number is always drawn from ``training`` (the round's seeded
        training generator), so the data order and Poisson samples are the same
        whichever source is used. Seeded: that number seeds the noise, as
        earlier versions did. Secure: it is discarded and the state is fresh
        OS randomness (:meth:`refresh`).
        """
        import torch

        drawn = int(torch.randint(2**62, (1,), generator=training))
        noise = torch.Generator(device=device)
        if self.reproducible_seed is None:
            self.refresh(noise)
        else:
            noise.manual_seed(drawn)
        return noise

    def refresh(self, noise: torch.Generator) -> None:
        """Refill ``noise``'s state from the OS (secure); a seeded source leaves it alone.

        Raises
        ------
        RuntimeError
            torch's CPU generator state does not have the layout this code
            writes (a torch version that changed it): no noise is drawn from a
            state that may not be what was written.
        """
        if self.reproducible_seed is not None:
            return
        import torch

        if noise.device.type != "cpu":
            noise.manual_seed(secrets.randbits(64))
            if noise.device.type == "cuda":
                noise.set_offset(4 * secrets.randbits(60))  # Philox offsets advance in fours
            return
        state = bytearray(noise.get_state().numpy().tobytes())
        if len(state) != _CPU_STATE_BYTES:
            raise RuntimeError(
                f"torch {torch.__version__}: the CPU generator state has {len(state)} bytes, "
                f"not the {_CPU_STATE_BYTES} this code fills with OS randomness"
            )
        words = np.frombuffer(secrets.token_bytes(4 * _MT_WORDS), dtype="<u4").astype("<u8")
        state[_MT_OFFSET : _MT_OFFSET + 8 * _MT_WORDS] = words.tobytes()
        struct.pack_into("<ii", state, 8, 1, 1)  # left = 1 (twist before the next draw), seeded
        noise.set_state(torch.frombuffer(state, dtype=torch.uint8).clone())
        back = noise.get_state().numpy().tobytes()
        if back[_MT_OFFSET : _MT_OFFSET + 8 * _MT_WORDS] != words.tobytes():
            raise RuntimeError(
                f"torch {torch.__version__}: the CPU generator did not keep the state written "
                "into it; its layout changed, so the noise would not be OS randomness"
            )


def refuse_in_deployment(*, insecure_reproducible: bool, command: str) -> None:
    """Refuse ``privacy.insecure_reproducible_noise`` in a real deployment.

    Raises
    ------
    ConfigError
        The key is true: the noise would be derived from ``federation.seed``,
        which the server and every site hold.
    """
    if insecure_reproducible:
        raise ConfigError(
            f"{command} refuses privacy.insecure_reproducible_noise = true: it derives the DP "
            "noise from federation.seed, which the server and every site hold, so anyone of "
            "them can remove it and the epsilon means nothing. It is for reproducible tests "
            "with `flmi run` only; remove the key"
        )


def warn_if_insecure(noise: NoiseSource, *, dp: str) -> None:
    """Log, loudly, that a DP run's noise is seeded and so protects nobody."""
    if dp != "none" and not noise.is_secure:
        log.warning(
            "INSECURE: privacy.insecure_reproducible_noise = true: the DP noise is derived "
            "from federation.seed and can be regenerated and removed by anyone holding the "
            "config; this run has no privacy guarantee (for reproducible tests only)"
        )
