"""Run plans: ``lamina run``'s fast path.

- :mod:`~lamina.runtime.plans.cache`: what a plan holds, when it is void, where it is
  cached (``<root>/cache/run``).
- :mod:`~lamina.runtime.plans.replay`: a warm run replayed from a plan.

Both stay free of dataclasses and typing: their start-up time is the point.
"""

from __future__ import annotations

from lamina.exports import lazy_exports

TYPE_CHECKING = False  # not typing's: importing typing costs the fast path milliseconds
if TYPE_CHECKING:
    from lamina.runtime.plans.cache import (
        PLAN_VERSION,
        host_facts,
        load_plan,
        make_plan,
        refs_key,
        save_plan,
    )
    from lamina.runtime.plans.replay import (
        try_run,
    )

__all__ = [
    "PLAN_VERSION",
    "host_facts",
    "load_plan",
    "make_plan",
    "refs_key",
    "save_plan",
    "try_run",
]

_HOME = {
    "PLAN_VERSION": "cache",
    "host_facts": "cache",
    "load_plan": "cache",
    "make_plan": "cache",
    "refs_key": "cache",
    "save_plan": "cache",
    "try_run": "replay",
}


__getattr__, __dir__ = lazy_exports(globals(), _HOME)
