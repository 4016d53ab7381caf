"""Which candidate architectures a pipeline evaluates.

Uniform sampling mirrors how a search would see the space, but with 20-100
archs it rarely includes the top of the space, where rank preservation matters
most (DC-Bench and the zero-cost literature report top-10% metrics for that
reason). Stratified sampling draws the same number of archs from each quantile
bin of a reference column, so every accuracy level, the top included, is
represented. The pipeline takes that column from ``sample.table``; left empty
it is the NAS-Bench-201 table shipped with proxynas
(:func:`proxynas.reference.default_table_path`).
"""

from __future__ import annotations

import random
from typing import Mapping

from proxynas.errors import ArchError, ConfigError
from proxynas.spaces.base import SearchSpace


def _members(space: SearchSpace, reference: Mapping[str, float]) -> list[tuple[float, str]]:
    """``(value, canonical arch)`` of every arch of ``reference`` that is in ``space``, sorted by value."""
    members = []
    for arch, value in reference.items():
        try:
            members.append((value, space.validate(arch)))
        except ArchError:  # not in this space (e.g. filtered out): not eligible
            continue
    return sorted(members)


def top_sample(
    space: SearchSpace, reference: Mapping[str, float], n: int, *, fraction: float, seed: int
) -> list[str]:
    """``n`` distinct archs drawn uniformly from the best ``fraction`` of ``space`` by ``reference``.

    "Top 10%" is counted among the archs of ``space`` (after its filters) that
    have a reference value; ties at the cut-off go by the canonical string.
    """
    members = _members(space, reference)
    top = members[len(members) - max(1, round(fraction * len(members))) :]
    if n > len(top):
        raise ConfigError(
            f"sample.num_archs={n} but the top {fraction:.0%} of the space holds {len(top)} archs;"
            " lower sample.num_archs or raise sample.fraction"
        )
    return random.Random(seed).sample([arch for _, arch in top], n)


def stratified_sample(
    space: SearchSpace, reference: Mapping[str, float], n: int, *, bins: int, seed: int
) -> list[str]:
    """``n`` distinct archs of ``space``, ``n / bins`` from each quantile bin of ``reference``.

    Only archs that are members of ``space`` (e.g. connected ones when the space
    skips disconnected cells) and have a reference value are eligible. When
    ``n`` is not a multiple of ``bins`` the top bins get one more.
    """
    members = _members(space, reference)
    if n > len(members):
        raise ConfigError(
            f"sample.num_archs={n} but only {len(members)} archs of the space have reference values; lower it"
        )
    if not 1 <= bins <= n:
        raise ConfigError(f"sample.bins={bins} must be between 1 and sample.num_archs={n}")
    rng = random.Random(seed)
    picked: list[str] = []
    for b in range(bins):
        lo, hi = len(members) * b // bins, len(members) * (b + 1) // bins
        take = n // bins + (1 if b >= bins - n % bins else 0)
        picked.extend(arch for _, arch in rng.sample(members[lo:hi], take))
    rng.shuffle(picked)
    return picked
