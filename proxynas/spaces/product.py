"""Spaces whose archs are one choice per position: the shared enumeration, sampling and codec.

NB201 (one op per cell edge) and the 720-ConvNet grid (one value per
dimension) are both a product of per-position choice lists, optionally
filtered (NB201's ``skip_disconnected``). A subclass of :class:`ProductSpace`
declares the choices and how an arch string maps to one value per position;
this base derives everything else, identically for every such space:

* ``encode``: the index of each position's value in its choice list, so
  ``cardinalities`` are the list lengths;
* ``enumerate``: the codes in mixed-radix order, position 0 the most
  significant digit (``itertools.product`` order), minus filtered-out codes;
* ``sample(n, seed)``: ``random.Random(seed).sample`` over the members' flat
  (mixed-radix) indices, i.e. uniform without replacement over the members.
"""

from __future__ import annotations

import itertools
import numbers
import random
from abc import abstractmethod
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Hashable, Iterator, Sequence

from proxynas.errors import ArchError, ConfigError
from proxynas.spaces.base import SearchSpace


@dataclass(frozen=True)
class ProductSpace(SearchSpace):
    """The archs of ``itertools.product(*choices())`` that :meth:`accepts`, named by strings.

    Subclasses implement :meth:`choices`, :meth:`arch_values` (parse) and
    :meth:`arch_string` (format), and ``build``; they override :meth:`accepts`
    (with :attr:`filtered` true and :meth:`rejection`) to drop codes.
    """

    # -- what a subclass declares ----------------------------------------------

    @abstractmethod
    def choices(self) -> tuple[tuple[Hashable, ...], ...]:
        """The allowed values of each position, in code order."""

    @abstractmethod
    def arch_values(self, arch: str) -> tuple[Any, ...]:
        """One value per position of a well-formed ``arch`` (members or not); ArchError otherwise."""

    @abstractmethod
    def arch_string(self, values: Sequence[Any]) -> str:
        """The canonical string of one value per position (inverse of :meth:`arch_values`)."""

    @property
    def filtered(self) -> bool:
        """Whether :meth:`accepts` can reject a code (then membership needs a scan)."""
        return False

    def accepts(self, code: tuple[int, ...]) -> bool:
        """Whether the arch of ``code`` is a member; every code is, unless overridden."""
        return True

    def rejection(self, arch: str) -> str:
        """Why a well-formed ``arch`` that :meth:`accepts` rejects is not a member (one line)."""
        return f"arch {arch!r} is not in this space"

    @property
    def label(self) -> str:
        """How errors name the space (e.g. its spec name)."""
        return self.name

    def code_help(self) -> str:
        """What a valid code looks like, after ``expected N integers``."""
        cards = self.cardinalities()
        if len(set(cards)) == 1:
            return f"in 0..{cards[0] - 1}"
        return "(" + ", ".join(f"position {k} 0..{n - 1}" for k, n in enumerate(cards)) + ")"

    # -- derived ----------------------------------------------------------------

    def cardinalities(self) -> tuple[int, ...]:
        return tuple(len(values) for values in self.choices())

    def validate(self, arch: str) -> str:
        values = self.arch_values(arch)
        if self.filtered and not self.accepts(self._code_of(values)):
            raise ArchError(self.rejection(arch))
        return self.arch_string(values)

    def encode(self, arch: str) -> tuple[int, ...]:
        """Index of each position's value in its choice list (any well-formed arch, member or not)."""
        return self._code_of(self.arch_values(arch))

    def decode(self, code: Sequence[int]) -> str:
        cards = self.cardinalities()
        try:
            code = tuple(code)
        except TypeError:
            code = None  # reported below
        if code is None or len(code) != len(cards) or not all(_is_index(c, n) for c, n in zip(code, cards)):
            raise ArchError(f"invalid {self.label} code {code!r}: expected {len(cards)} integers {self.code_help()}")
        return self.arch_string(tuple(values[int(c)] for values, c in zip(self.choices(), code)))

    def enumerate(self) -> Iterator[str]:
        """Every member, position 0 the slowest-changing (``itertools.product`` order)."""
        for flat in self._members():
            yield self.decode(self._flat_to_code(flat))

    def size(self) -> int:
        return len(self._members())

    def sample(self, n: int, seed: int) -> list[str]:
        """``n`` distinct members, uniform without replacement, via ``random.Random(seed)``.

        Drawing from the member list (rather than rejecting filtered draws)
        gives the same uniform distribution and stays fast when ``n`` is close
        to the space size.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"{self.name}: number of archs to sample must be an integer >= 0, got {n!r}")
        members = self._members()
        if n > len(members):
            raise ConfigError(
                f"{self.name}: cannot sample {n} distinct archs, the space has only {len(members)}"
                f"{self.member_adjective} archs"
            )
        return [self.decode(self._flat_to_code(f)) for f in random.Random(seed).sample(members, n)]

    @property
    def member_adjective(self) -> str:
        """Inserted before "archs" in the too-many-samples error (e.g. ``" connected"``)."""
        return ""

    # -- helpers ------------------------------------------------------------------

    def _code_of(self, values: Sequence[Any]) -> tuple[int, ...]:
        return tuple(choices.index(v) for choices, v in zip(self.choices(), values))

    def _flat_to_code(self, flat: int) -> tuple[int, ...]:
        """Mixed-radix digits of ``flat``, position 0 most significant (= enumeration order)."""
        digits = []
        for n in reversed(self.cardinalities()):
            flat, d = divmod(flat, n)
            digits.append(d)
        return tuple(reversed(digits))

    def _members(self) -> Sequence[int]:
        """Flat indices of the members, ascending."""
        total = 1
        for n in self.cardinalities():
            total *= n
        if not self.filtered:
            return range(total)
        # The settings and the choice lists determine the filter; keyed on both
        # so that two specs of the same name (tests rewrite files) never share.
        return _filtered_members(self, self.choices())


@lru_cache(maxsize=16)
def _filtered_members(space: ProductSpace, choices: tuple) -> tuple[int, ...]:
    codes = itertools.product(*(range(len(c)) for c in choices))
    return tuple(k for k, code in enumerate(codes) if space.accepts(code))


def _is_index(value: object, n: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and 0 <= value < n
