"""The phase graph: which phases need which, in what order they run, and what a failure stops.

Pure functions over a mapping of phase name to the names it needs, in declaration order. No
processes, no config models: the config validates with these and the check runner schedules with
them, so both agree on one reading of the graph.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

Needs = Mapping[str, Sequence[str]]

# Where a phase can run: on the task's own commit, or on the candidate before base moves.
STAGES: tuple[str, ...] = ("verify", "integrate")


def unknown_needs(needs: Needs) -> list[tuple[str, str]]:
    """(phase, need) pairs whose need is not a phase of the graph."""
    return [(name, need) for name, wanted in needs.items() for need in wanted if need not in needs]


def find_cycle(needs: Needs) -> list[str] | None:
    """A cycle of needs as a path that returns to its start (``[a, c, a]``), or None.

    Needs that name no phase are ignored here (``unknown_needs`` reports them)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for need in needs.get(name, ()):
            if need not in needs:
                continue
            if state.get(need) == 1:
                return [*path[path.index(need) :], need]
            if need not in state:
                found = visit(need)
                if found:
                    return found
        path.pop()
        state[name] = 2
        return None

    for name in needs:
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


def order(needs: Needs) -> list[str]:
    """Every phase after all it needs; otherwise in declaration order (a stable topological sort).

    The graph must be acyclic (``find_cycle`` is None)."""
    placed: list[str] = []
    done: set[str] = set()
    remaining = list(needs)
    while remaining:
        for name in remaining:
            if all(n in done or n not in needs for n in needs[name]):
                placed.append(name)
                done.add(name)
                remaining.remove(name)
                break
        else:
            raise ValueError(f"the phases {', '.join(remaining)} need each other in a cycle")
    return placed


def closure(needs: Needs, names: Iterable[str]) -> set[str]:
    """``names`` and every phase they need, directly or not."""
    found: set[str] = set()
    todo = [n for n in names if n in needs]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        todo.extend(n for n in needs[name] if n in needs)
    return found


def ready(needs: Needs, finished: Iterable[str], started: Iterable[str]) -> list[str]:
    """Phases not yet started whose needs have all finished, in declaration order."""
    finished_set, started_set = set(finished), set(started)
    return [
        name
        for name, wanted in needs.items()
        if name not in started_set and all(w in finished_set or w not in needs for w in wanted)
    ]
