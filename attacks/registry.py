"""The attack registry: a plain dict from stable attack ID to its spec, filled by a decorator.

IDs are stable forever (reports, policies and baselines refer to them): `FA-MIA-*` for membership
inference, `FA-EXT-*` for extraction. Registering an ID twice raises (pass `force=True` to replace one
deliberately, e.g. in a test). Membership attacks are functions `(ctx: MembershipContext, **params) ->
np.ndarray` returning one score per text of the target cache, higher = more likely a member.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import InputError


@dataclass(frozen=True)
class AttackSpec:
    """What the registry knows about an attack.

    Attributes:
        id: stable ID, e.g. "FA-MIA-LOSS".
        name: short human name ("LOSS").
        kind: "membership" or "extraction".
        func: the implementation.
        needs: inputs beyond the target scores ("reference", "shadows", "stats").
        citation: the paper the formula comes from.
        defaults: the default keyword parameters (recorded in results).
    """

    id: str
    name: str
    kind: str
    func: Callable[..., Any]
    needs: frozenset[str] = frozenset()
    citation: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        doc = (self.func.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else self.name

    def as_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "kind": self.kind, "needs": sorted(self.needs),
                "citation": self.citation, "defaults": dict(self.defaults), "summary": self.summary}


_ATTACKS: dict[str, AttackSpec] = {}


def register_attack(attack_id: str, *, name: str, kind: str = "membership", needs: tuple[str, ...] = (),
                    citation: str = "", defaults: dict[str, Any] | None = None,
                    force: bool = False) -> Callable[[Callable], Callable]:
    """Decorator registering `func` under `attack_id`; raises ValueError on a duplicate ID."""

    def decorate(func: Callable) -> Callable:
        if attack_id in _ATTACKS and not force:
            raise ValueError(f"attack ID {attack_id} is already registered ({_ATTACKS[attack_id].func.__module__})")
        _ATTACKS[attack_id] = AttackSpec(id=attack_id, name=name, kind=kind, func=func, needs=frozenset(needs),
                                         citation=citation, defaults=dict(defaults or {}))
        return func

    return decorate


def unregister_attack(attack_id: str) -> None:
    """Removes an attack (for tests and plugins that replace a built-in)."""
    _ATTACKS.pop(attack_id, None)


def get_attack(attack_id: str) -> AttackSpec:
    try:
        return _ATTACKS[attack_id]
    except KeyError:
        known = ", ".join(sorted(_ATTACKS)) or "none"
        raise InputError(f"unknown attack {attack_id!r}; known attacks: {known}") from None


def list_attacks(kind: str | None = None) -> list[AttackSpec]:
    """Registered attacks (of one kind, if given), sorted by ID."""
    return [spec for key, spec in sorted(_ATTACKS.items()) if kind is None or spec.kind == kind]
