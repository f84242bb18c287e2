"""The control-flow sites the rewriter converted: where each is in the user's code and what
the runtime needs to know about it (the variables it merges, side effects in its branches).

Generated code refers to a site by its index, so error messages can name the user's
file and line without the generated code carrying them around.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Effect:
    """A statement in a branch that changes something outside the branch."""
    lineno: int
    what: str


@dataclass
class Site:
    kind: str  # "if", "ifexp", "and", "or", "not", "while", "guarded-if", "guarded-while"
    filename: str
    lineno: int
    names: tuple[str, ...] = ()
    effects: list[Effect] = field(default_factory=list)
    note: str = ""  # why a guarded construct was not converted; "for"/"while" for a lowered loop
    lenient: frozenset = frozenset()  # loop variables that may stay unselectable (see select.py)


SITES: list[Site] = []


def register(site: Site) -> int:
    SITES.append(site)
    return len(SITES) - 1
