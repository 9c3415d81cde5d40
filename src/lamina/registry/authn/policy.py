"""Who may do what: a small access-control list, a value that tests and operators can
write by hand.

A :class:`Policy` maps user names to resource patterns to actions. The patterns are
shell globs over repository names (``team/*``; ``*`` also crosses slashes) or, for
the registry's own resources, ``registry:catalog``. The user ``*`` stands for every
authenticated user; anonymous requests get only ``pull``, and only on the
:attr:`Policy.anonymous` globs. Rules add up: a user gets the union of their own rules
and the ``*`` rules.

JSON form (``--acl FILE``)::

    {
      "users": {
        "alice": {"team/*": ["pull", "push", "delete"]},
        "*": {"*": ["pull"], "registry:catalog": ["*"]}
      },
      "anonymous": ["public/*"]
    }
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from lamina.errors import InvalidFormat, NotFound
from lamina.oci.reference import is_valid_repository
from lamina.registry.challenges import DELETE, PULL, PUSH, Scope

ANY_USER = "*"
ALL_ACTIONS = "*"
CATALOG = "registry:catalog"
_KNOWN_ACTIONS = frozenset({PULL, PUSH, DELETE, ALL_ACTIONS})
_ACL_MAX = 1 << 20  # an ACL file is a handful of rules, never megabytes


@dataclass(frozen=True, slots=True)
class Rule:
    """``user`` may do ``actions`` on the resources ``pattern`` matches."""

    user: str
    pattern: str
    actions: frozenset[str]

    def __post_init__(self) -> None:
        if not self.user or not self.pattern:
            raise InvalidFormat("an ACL rule needs a user and a pattern")
        unknown = self.actions - _KNOWN_ACTIONS
        if unknown:
            raise InvalidFormat(
                f"unknown ACL action(s) {sorted(unknown)!r}",
                hint="actions are pull, push, delete or *",
            )

    def covers(self, scope: Scope) -> bool:
        if scope.type == "registry":
            return self.pattern == f"registry:{scope.name}"
        if scope.type != "repository" or self.pattern.startswith("registry:"):
            return False
        return fnmatchcase(scope.name, self.pattern)


@dataclass(frozen=True, slots=True)
class Policy:
    """The rules, plus the repository globs anonymous requests may pull."""

    rules: tuple[Rule, ...] = ()
    anonymous: tuple[str, ...] = field(default=())

    def grant(self, user: str | None, requested: Iterable[Scope]) -> tuple[Scope, ...]:
        """What of ``requested`` ``user`` may have (None = anonymous): each scope cut
        down to the allowed actions, scopes left with none dropped. A request for
        ``*`` is granted only by a rule that grants ``*``."""
        out: list[Scope] = []
        for scope in requested:
            allowed = self._allowed(user, scope)
            if ALL_ACTIONS in allowed:
                acts = scope.actions
            else:
                acts = tuple(a for a in scope.actions if a in allowed)
            if acts:
                out.append(Scope(scope.name, acts, scope.type))
        return tuple(out)

    def _allowed(self, user: str | None, scope: Scope) -> frozenset[str]:
        if scope.type == "repository" and not is_valid_repository(scope.name):
            return frozenset()
        if user is None:
            if scope.type == "repository" and any(
                fnmatchcase(scope.name, g) for g in self.anonymous
            ):
                return frozenset({PULL})
            return frozenset()
        acts: set[str] = set()
        for rule in self.rules:
            if rule.user in (user, ANY_USER) and rule.covers(scope):
                acts |= rule.actions
        return frozenset(acts)

    def with_anonymous_pull(self) -> Policy:
        """This policy, letting anonymous requests pull every repository unless it
        already names which ones."""
        return self if self.anonymous else Policy(self.rules, ("*",))


DEFAULT_POLICY = Policy(
    rules=(
        Rule(ANY_USER, "*", frozenset({PULL, PUSH, DELETE})),
        Rule(ANY_USER, CATALOG, frozenset({ALL_ACTIONS})),
    )
)
"""An authenticated user may pull, push and delete every repository and list the
catalog; anonymous requests may do nothing."""


def policy_from_json(data: object) -> Policy:
    """A Policy from the parsed JSON form above; malformed -> InvalidFormat."""
    if not isinstance(data, dict) or not set(data) <= {"users", "anonymous"}:
        raise InvalidFormat(
            "an ACL is an object with 'users' and optionally 'anonymous'",
            hint='e.g. {"users": {"alice": {"team/*": ["pull", "push"]}}}',
        )
    users = data.get("users", {})
    anonymous = data.get("anonymous", [])
    if not isinstance(users, dict):
        raise InvalidFormat("ACL 'users' must map user names to {pattern: [actions]}")
    if not isinstance(anonymous, list) or not all(isinstance(g, str) for g in anonymous):
        raise InvalidFormat("ACL 'anonymous' must be a list of repository globs")
    rules: list[Rule] = []
    for user, grants in users.items():
        if not isinstance(grants, dict):
            raise InvalidFormat(f"ACL entry for {user!r} must map patterns to action lists")
        for pattern, actions in grants.items():
            if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
                raise InvalidFormat(f"ACL actions for {user!r} on {pattern!r} must be a list")
            rules.append(Rule(user, pattern, frozenset(actions)))
    return Policy(tuple(rules), tuple(anonymous))


def load_policy(path: str) -> Policy:
    """Read an ACL JSON file (see the module docstring)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(_ACL_MAX + 1)
    except FileNotFoundError as exc:
        raise NotFound(f"ACL file {path} not found", hint="check the --acl path") from exc
    except OSError as exc:
        raise InvalidFormat(f"cannot read ACL file {path}: {exc.strerror}") from exc
    if len(raw) > _ACL_MAX:
        raise InvalidFormat(f"ACL file {path} is larger than {_ACL_MAX} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidFormat(f"ACL file {path} is not valid JSON: {exc}") from exc
    return policy_from_json(data)
