"""Grammar specifications: the four integers of the paper's recipe plus a seed.

Validation happens here, before any work, so a bad spec fails with a message that
names the field and the allowed range instead of deep inside NLTK or numpy.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

# Upper bounds keep a typo (an extra zero or two) from allocating gigabytes; they are
# far above anything the paper used (at most 200 nonterminals, 2000 terminals).
FIELD_RANGES: dict[str, tuple[int, int]] = {
    "nonterminals": (1, 100_000),
    "terminals": (1, 1_000_000),
    "max_rhs_len": (1, 10_000),
    "max_rhs_options": (1, 10_000),
    "seed": (0, 2**63 - 1),
}
SPEC_FIELDS = ("nonterminals", "terminals", "max_rhs_len", "max_rhs_options")


class SpecError(ValueError):
    """A grammar, dataset or size specification that cannot be used."""


def check_int_field(name: str, value: object, low: int, high: int, what: str = "field") -> int:
    """Return ``value`` as an int if it is an integer in ``low..high``, else raise SpecError."""
    # bool is an int subclass; "True nonterminals" is always a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            value = int(value)
        else:
            raise SpecError(f"{what} '{name}' must be an integer in {low}..{high}, got {value!r}")
    if not low <= value <= high:
        raise SpecError(f"{what} '{name}' must be an integer in {low}..{high}, got {value}")
    return value


@dataclass(frozen=True)
class GrammarSpec:
    """A random PCFG as the paper builds it (paper-facts §1).

    Attributes:
        nonterminals: number of nonterminals N0..N{n-1} (the start symbol S is extra).
        terminals: number of terminals; they are the token ids 1..terminals.
        max_rhs_len: right-hand sides have a length uniform in 1..max_rhs_len.
        max_rhs_options: each nonterminal has 1..max_rhs_options productions.
        seed: seeds Python's ``random.Random`` that draws the grammar.
    """

    nonterminals: int
    terminals: int
    max_rhs_len: int
    max_rhs_options: int
    seed: int = 0

    def __post_init__(self) -> None:
        for name, (low, high) in FIELD_RANGES.items():
            object.__setattr__(self, name, check_int_field(name, getattr(self, name), low, high))

    @classmethod
    def from_dict(cls, data: dict) -> GrammarSpec:
        if not isinstance(data, dict):
            raise SpecError(f"grammar spec must be a mapping with fields {list(FIELD_RANGES)}")
        missing = [f for f in SPEC_FIELDS if f not in data]
        if missing:
            raise SpecError(
                f"grammar spec is missing field(s) {', '.join(missing)}; "
                f"required: {', '.join(SPEC_FIELDS)} (and optional seed)"
            )
        unknown = sorted(set(data) - set(FIELD_RANGES))
        if unknown:
            raise SpecError(
                f"grammar spec has unknown field(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(FIELD_RANGES)}"
            )
        return cls(**{k: data[k] for k in FIELD_RANGES if k in data})

    @classmethod
    def parse(cls, text: str, seed: int = 0) -> GrammarSpec:
        """Parse the command-line form ``NT,T,LEN,OPTS`` (e.g. ``20,300,5,10``)."""
        parts = [p.strip() for p in str(text).replace("(", "").replace(")", "").split(",")]
        if len(parts) != 4 or any(p == "" for p in parts):
            raise SpecError(
                f"grammar must be written NONTERMINALS,TERMINALS,MAX_RHS_LEN,MAX_RHS_OPTIONS "
                f"(four integers, e.g. 20,300,5,10), got {text!r}"
            )
        return cls(*parts, seed=seed)  # type: ignore[arg-type]

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def short(self) -> str:
        """``NT,T,LEN,OPTS`` form, as the command line takes it."""
        return f"{self.nonterminals},{self.terminals},{self.max_rhs_len},{self.max_rhs_options}"

    @property
    def name(self) -> str:
        """A file-system-safe name, e.g. ``pcfg-20-300-5-10-s0``."""
        return (
            f"pcfg-{self.nonterminals}-{self.terminals}-{self.max_rhs_len}-"
            f"{self.max_rhs_options}-s{self.seed}"
        )

    def __str__(self) -> str:
        return f"({self.short}) seed {self.seed}"


_SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "B": 10**9, "T": 10**12}


def parse_size(text: str | int, field: str = "tokens", minimum: int = 1) -> int:
    """Parse a count such as ``100K``, ``10M``, ``1.5M``, ``2e6`` or ``250000`` (decimal units)."""
    if isinstance(text, bool):
        raise SpecError(f"'{field}' must be a positive count such as 100K or 10M, got {text!r}")
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(
            r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?\d+)?)\s*([kKmMgGbBtT]?)\s*", str(text)
        )
        if not match:
            raise SpecError(
                f"'{field}' must be a count such as 100K, 10M or 250000 "
                f"(suffixes K, M, G), got {text!r}"
            )
        number = float(match.group(1)) * _SUFFIXES[match.group(2).upper()]
        if not number.is_integer():
            raise SpecError(f"'{field}' must be a whole number of tokens, got {text!r}")
        value = int(number)
    if value < minimum:
        raise SpecError(f"'{field}' must be at least {minimum}, got {text!r}")
    return value


def format_size(n: int) -> str:
    """Inverse of parse_size for round numbers: 100000 -> '100K'."""
    for suffix, scale in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{suffix}"
    return str(n)


def spec_differences(have: dict, want: dict, prefix: str = "") -> list[str]:
    """What differs between two nested spec dicts, one ``key: old there, new requested``
    line per leaf; the refusals of datasets, runs and sweeps all say it this way."""
    diffs = []
    for key in sorted(set(have) | set(want), key=str):
        a, b = have.get(key), want.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += spec_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: {a!r} there, {b!r} requested")
    return diffs


def parse_seeds(text: str) -> list[int]:
    """``3`` -> [3]; ``0-4`` -> [0..4]; ``1,5,9`` -> [1, 5, 9]; duplicates dropped."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                if int(hi) < int(lo):
                    raise ValueError
                seeds += list(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise SpecError(
            f"field 'seeds' must be integers such as 3, 0-4 or 1,5,9, got {text!r}"
        ) from None
    return list(dict.fromkeys(seeds))
