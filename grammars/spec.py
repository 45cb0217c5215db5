"""Grammar specifications: the four integers of the paper's recipe plus a seed.

Validation happens here, before any work, so a bad spec fails with a message that
names the field and the allowed range instead of deep inside NLTK or numpy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from gzipscale.helpers import SpecError, check_int_field

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
# The most right-hand-side symbols a grammar can have, NT x OPTS x LEN (on average a quarter
# of it is drawn). Each field's own bound allows 10^13, which ran for minutes and took
# gigabytes before printing anything; 10^7 builds in under 10 s and 400 MB on one core, 5x
# the largest grammar any series or preset uses (200,300,50,200: 2 x 10^6).
MAX_PRODUCTION_SYMBOLS = 10_000_000


@dataclass(frozen=True)
class GrammarSpec:
    """A random PCFG as the paper builds it (Pandey 2024).

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
        size = self.nonterminals * self.max_rhs_options * self.max_rhs_len
        if size > MAX_PRODUCTION_SYMBOLS:
            raise SpecError(
                f"grammar {self.short}: nonterminals x max_rhs_options x max_rhs_len = {size:,} "
                f"right-hand-side symbols at most, above the cap of {MAX_PRODUCTION_SYMBOLS:,}; "
                "use fewer nonterminals, options or a shorter max_rhs_len"
            )

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
