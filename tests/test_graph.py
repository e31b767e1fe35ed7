"""The phase graph, the stage verdict and the content-keyed cache, in-process (no processes)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from phases.checks import GraphRun, PhaseOutcome, PhaseState, empty_stage, run_graph, verdict
from phases.outcomes import VerifyStatus
from runner import graph
from runner.checkcache import CheckCache, cache_key
from runner.config import PhaseConfig, PipelineConfig
from runner.errors import ConfigError
from runner.state import open_db

NEEDS = {"lint": [], "types": [], "unit": ["lint"], "e2e": ["unit", "types"], "docs": []}


def test_order_puts_every_phase_after_its_needs_and_keeps_declaration_order_otherwise() -> None:
    assert graph.order(NEEDS) == ["lint", "types", "unit", "e2e", "docs"]
    assert graph.order({"b": ["a"], "a": []}) == ["a", "b"]


def test_a_cycle_is_found_as_a_path_back_to_its_start() -> None:
    assert graph.find_cycle({"a": ["c"], "b": [], "c": ["a"]}) == ["a", "c", "a"]
    assert graph.find_cycle({"a": ["a"]}) == ["a", "a"]
    assert graph.find_cycle(NEEDS) is None


def test_closure_and_ready() -> None:
    assert graph.closure(NEEDS, ["e2e"]) == {"e2e", "unit", "lint", "types"}
    assert graph.ready(NEEDS, finished=[], started=[]) == ["lint", "types", "docs"]
    assert graph.ready(NEEDS, finished=["lint"], started=["lint", "types"]) == ["unit", "docs"]


def _config(phases: dict[str, Any]) -> PipelineConfig:
    return PipelineConfig(phases=phases)


def test_config_refuses_unknown_needs_cycles_reserved_names_and_stage_gaps() -> None:
    cases: dict[str, dict[str, Any]] = {
        "'lnt' is not a phase": {"unit": {"run": ["x"], "needs": ["lnt"]}},
        "cycle: a -> c -> a": {"a": {"run": ["x"], "needs": ["c"]}, "c": {"run": ["y"], "needs": ["a"]}},
        "reserved name": {"dev": {"run": ["x"]}},
        "does not run at verify": {
            "a": {"run": ["x"], "needs": ["b"]},
            "b": {"run": ["y"], "on": ["integrate"]},
        },
        "not a valid phase name": {"a b": {"run": ["x"]}},
    }
    for expected, phases in cases.items():
        with pytest.raises(ValueError, match=expected):
            _config(phases)


def test_the_older_form_loads_as_named_phases_of_the_same_meaning() -> None:
    both = _config({"verify": {"run": ["make test"], "timeout": 60}})
    assert list(both.phases) == ["verify"] and both.phases["verify"].on == ["verify", "integrate"]
    assert both.phases["verify"].timeout == 60
    split = _config({"verify": {"run": ["make test"]}, "integrate": {"run": ["make e2e"]}})
    assert split.phases["verify"].on == ["verify"] and split.phases["integrate"].on == ["integrate"]
    none_again = _config({"verify": {"run": ["make test"]}, "integrate": {"run": []}})
    assert list(none_again.phases) == ["verify"] and none_again.phases["verify"].on == ["verify"]
    assert _config({"verify": {"run": []}}).phases == {}


def test_a_config_file_names_the_file_and_the_cycle(tmp_path: Path) -> None:
    from runner.config import load_config

    path = tmp_path / "pipeline.yaml"
    path.write_text("phases:\n  a: {run: [x], needs: [c]}\n  c: {run: [y], needs: [a], on: [verify]}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value) and "a -> c -> a" in str(caught.value)


def test_an_unquoted_on_key_in_yaml_means_on(tmp_path: Path) -> None:
    from runner.config import load_config

    path = tmp_path / "pipeline.yaml"
    path.write_text("phases:\n  e2e: {run: [x], on: [integrate]}\n")
    loaded = load_config(path)
    assert loaded.config.phases["e2e"].on == ["integrate"]
    assert loaded.origin_of("phases.e2e.on").kind == "file"


def _outcome(name: str, state: PhaseState, optional: bool = False) -> PhaseOutcome:
    return PhaseOutcome(name, state, f"{name} said so", 1 if state is PhaseState.FAILED else 0, optional=optional)


def test_verdict_a_required_failure_rejects_and_names_what_it_stopped() -> None:
    result = verdict(
        [_outcome("types", PhaseState.PASSED), _outcome("lint", PhaseState.FAILED),
         PhaseOutcome("unit", PhaseState.NOT_RUN, "not run: needs lint (failed)")],
        "verify", "lint",
    )  # fmt: skip
    assert result.status is VerifyStatus.FAIL
    assert result.summary.startswith("phase lint failed: lint said so")
    assert "not run: unit" in result.summary and "types (passed)" in result.summary


def test_verdict_optional_failures_pass_and_unchecked_is_not_a_pass() -> None:
    ok = verdict([_outcome("a", PhaseState.PASSED), _outcome("docs", PhaseState.FAILED, optional=True)], "verify", None)
    assert ok.status is VerifyStatus.PASS and "optional phase docs failed" in ok.summary
    cached = verdict([_outcome("a", PhaseState.CACHED)], "integrate", None)
    assert cached.status is VerifyStatus.PASS
    nothing = verdict([_outcome("a", PhaseState.UNCHECKED)], "verify", None)
    assert nothing.status is VerifyStatus.UNCHECKED
    partly = verdict([_outcome("a", PhaseState.PASSED), _outcome("b", PhaseState.UNCHECKED)], "verify", None)
    assert partly.status is VerifyStatus.SKIP
    fault = verdict([_outcome("a", PhaseState.PASSED), _outcome("b", PhaseState.FAULT)], "verify", None)
    assert fault.status is VerifyStatus.FAULT


def test_empty_stages() -> None:
    only_integrate = {"e2e": PhaseConfig(run=["x"], on=["integrate"])}
    verify_only = empty_stage("verify", only_integrate)
    assert verify_only is not None and verify_only.status is VerifyStatus.PASS
    assert empty_stage("integrate", only_integrate) is None
    none = empty_stage("verify", {})
    assert none is not None and none.status is VerifyStatus.UNCHECKED
    later = empty_stage("integrate", {"unit": PhaseConfig(run=["x"], on=["verify"])})
    assert later is not None and later.status is VerifyStatus.PASS


def test_cache_key_changes_with_tree_recipes_env_and_on_only() -> None:
    key = cache_key("t1", "unit", [["pytest"]], {"A": "1"}, ["verify", "integrate"])
    assert key == cache_key("t1", "unit", [["pytest"]], {"A": "1"}, ["integrate", "verify"])
    for other in (
        cache_key("t2", "unit", [["pytest"]], {"A": "1"}, ["verify", "integrate"]),
        cache_key("t1", "lint", [["pytest"]], {"A": "1"}, ["verify", "integrate"]),
        cache_key("t1", "unit", [["pytest", "-x"]], {"A": "1"}, ["verify", "integrate"]),
        cache_key("t1", "unit", [["pytest"]], {"A": "2"}, ["verify", "integrate"]),
        cache_key("t1", "unit", [["pytest"]], {"A": "1"}, ["verify"]),
    ):
        assert other != key


def test_the_cache_keeps_passes_by_key_in_the_state_database(tmp_path: Path) -> None:
    db = open_db(tmp_path / "state.db")
    cache = CheckCache(db)
    assert cache.lookup("k") is None
    cache.store("k", phase="unit", tree="t", run_id=7, duration=2.5)
    hit = cache.lookup("k")
    assert hit is not None and hit.run_id == 7 and hit.duration == 2.5
    assert hit.describe().startswith("cached from run 7, ")
    db.close()
    assert CheckCache(open_db(tmp_path / "state.db")).lookup("k") is not None  # it outlives the process


def test_a_full_cache_hit_runs_nothing_and_makes_no_checkout(tmp_path: Path) -> None:
    db = open_db(tmp_path / "state.db")
    cache = CheckCache(db)
    phase = PhaseConfig(run=[["false"]])
    key = cache_key("tree1", "unit", [["false"]], {}, phase.on)
    cache.store(key, phase="unit", tree="tree1", run_id=3, duration=9.0)

    def no_checkout() -> Path:
        raise AssertionError("a cached phase needs no checkout")

    result = run_graph(
        GraphRun(
            phases={"unit": phase}, stage="integrate", tree="tree1", workdir=no_checkout, values={},
            log_dir=tmp_path / "logs", slots=threading.BoundedSemaphore(1), cache=cache,
        )
    )  # fmt: skip
    assert result.status is VerifyStatus.PASS
    (outcome,) = result.phases
    assert outcome.state is PhaseState.CACHED and outcome.cached is not None and outcome.cached.run_id == 3


def test_the_config_module_imports_no_registry_back() -> None:
    import subprocess
    import sys

    code = "import sys, runner.config; print(sorted(m for m in sys.modules if m.startswith('phases')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_registry_names_are_checked_when_handed_in(tmp_path: Path) -> None:
    from runner import registries
    from runner.config import load_config

    path = tmp_path / "pipeline.yaml"
    path.write_text("agent: {preset: agnetd}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, registries=registries.names())
    assert "'agent.preset'" in str(caught.value) and "Did you mean 'agentd'" in str(caught.value)
    assert str(path) in str(caught.value)


def test_a_required_phase_that_needs_a_failed_optional_one_rejects_the_attempt(tmp_path: Path) -> None:
    phases = {
        "docs": PhaseConfig(run=[["python3", "-c", "raise SystemExit(1)"]], optional=True),
        "publish": PhaseConfig(run=[["python3", "-c", "pass"]], needs=["docs"]),
    }
    result = run_graph(
        GraphRun(
            phases=phases, stage="verify", tree="t", workdir=lambda: tmp_path, values={},
            log_dir=tmp_path / "logs", slots=threading.BoundedSemaphore(2),
        )
    )  # fmt: skip
    assert result.status is VerifyStatus.FAIL
    assert "required phase publish cannot run: it needs docs, which failed" in result.summary


def test_a_file_extends_another_adding_and_dropping_phases_in_either_form(tmp_path: Path) -> None:
    from runner.config import load_config

    (tmp_path / "base.yaml").write_text("phases:\n  verify:\n    run: [make test]\n")
    (tmp_path / "named.yaml").write_text("extends: base.yaml\nphases:\n  lint: {run: [ruff check .]}\n")
    named = load_config(tmp_path / "named.yaml").config
    assert list(named.phases) == ["verify", "lint"]
    (tmp_path / "drop.yaml").write_text("extends: named.yaml\nphases:\n  verify: null\n")
    assert list(load_config(tmp_path / "drop.yaml").config.phases) == ["lint"]
