"""Every strategy arm passes one contract: picklable, the promised trial count, LRs in range,
repeatable draws; plus each arm's own shape (grid points, one Optuna study per seed ...)."""

from __future__ import annotations

import itertools
import json
import math
import pickle
from typing import Any

import pytest

from sweeps._ray import sample_configs
from sweeps.spec import SpecError, load_spec
from sweeps.strategies import (
    SEARCH_METRIC,
    STRATEGIES,
    Strategy,
    log_spaced,
    make_strategy,
    plan,
)

SEEDS = [0, 1]
ARMS: dict[str, dict[str, Any]] = {
    "lr_finder": {"kind": "lr_finder", "suggest": ["valley", "steep", "minimum"]},
    "grid": {"kind": "grid", "lr": {"min": 1e-4, "max": 1.0, "points": 5}},
    "optuna": {"kind": "optuna", "lr": {"min": 1e-4, "max": 1.0}, "trials": 4},
    "random": {"kind": "random", "lr": {"min": 1e-4, "max": 1.0}, "trials": 3},
    "recipe": {"kind": "recipe", "suggest": "steep"},
    "fixed": {"kind": "fixed", "lr": 3e-3},
}
EXPECTED_TRIALS = {"lr_finder": 6, "grid": 10, "optuna": 8, "random": 6, "recipe": 2, "fixed": 2}


def _strategy(kind: str) -> Strategy:
    spec = load_spec(
        {
            "name": "strategies-test",
            "task": {"dataset": {"name": "shapes"}},
            "seeds": SEEDS,
            "strategies": [ARMS[kind]],
        }
    )
    return plan(spec)[0]


def _configs(strategy: Strategy) -> list[dict[str, Any]]:
    return [
        config
        for search in strategy.searches()
        for config in sample_configs(
            search.param_space,
            num_samples=search.num_samples,
            searcher=search.searcher,
            seeds_apart=search.seeds_apart,
        )
    ]


def test_registry_covers_every_spec_kind() -> None:
    assert set(STRATEGIES) == set(ARMS)


@pytest.mark.parametrize("kind", sorted(ARMS))
def test_strategy_survives_pickle_round_trip(kind: str) -> None:
    strategy = _strategy(kind)
    copy = pickle.loads(pickle.dumps(strategy))
    assert repr(copy) == repr(strategy)
    assert [s.name for s in copy.searches()] == [s.name for s in strategy.searches()]
    assert _configs(copy) == _configs(strategy)


@pytest.mark.parametrize("kind", sorted(ARMS))
def test_strategy_plans_promised_trials_over_every_seed(kind: str) -> None:
    strategy = _strategy(kind)
    configs = _configs(strategy)
    assert strategy.n_trials() == EXPECTED_TRIALS[kind] == len(configs)
    assert sorted({c["seed"] for c in configs}) == SEEDS
    assert {c["strategy"] for c in configs} == {kind}
    assert {c["arm"] for c in configs} == {kind}


@pytest.mark.parametrize("kind", ["grid", "optuna", "random", "fixed"])
def test_search_arm_learning_rates_lie_in_range(kind: str) -> None:
    lrs = [c["lr"] for c in _configs(_strategy(kind))]
    assert all(1e-4 <= lr <= 1.0 for lr in lrs)


@pytest.mark.parametrize("kind", ["optuna", "random"])
def test_sampled_arms_repeat_their_draws(kind: str) -> None:
    first = [c["lr"] for c in _configs(_strategy(kind))]
    again = [c["lr"] for c in _configs(_strategy(kind))]
    assert first == again
    assert len(set(first)) > 1


def test_grid_is_log_spaced_per_seed() -> None:
    lrs = sorted({c["lr"] for c in _configs(_strategy("grid"))})
    assert lrs == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0])


def test_optuna_runs_one_study_per_seed_with_distinct_sampler_seeds() -> None:
    searches = _strategy("optuna").searches()
    assert [s.name for s in searches] == ["optuna-seed0", "optuna-seed1"]
    assert [s.param_space["seed"] for s in searches] == SEEDS
    assert len({s.searcher.seed for s in searches if s.searcher}) == 2
    assert all(s.searcher and s.searcher.sampler == "tpe" for s in searches)


def test_lr_finder_crosses_rules_with_seeds_and_leaves_lr_to_the_trial() -> None:
    configs = _configs(_strategy("lr_finder"))
    pairs = sorted((c["rule"], c["seed"]) for c in configs)
    expected = sorted((r, s) for r in ARMS["lr_finder"]["suggest"] for s in SEEDS)
    assert pairs == expected
    assert all("lr" not in c for c in configs)


def test_lr_finder_serves_every_seed_of_a_rule_before_the_next_rule() -> None:
    # trials started side by side are of other seeds: the seed's first trial has run the range
    # test the next rule's trial of that seed reads (served seed by seed, both ran it)
    configs = _configs(_strategy("lr_finder"))
    order = [(c["rule"], c["seed"]) for c in configs]
    assert order == [(r, s) for r in ARMS["lr_finder"]["suggest"] for s in SEEDS]


@pytest.mark.parametrize(
    ("low", "high", "points", "expected"),
    [
        (1e-3, 1e-1, 3, [1e-3, 1e-2, 1e-1]),
        (1e-5, 1.0, 2, [1e-5, 1.0]),
        (0.5, 8.0, 5, [0.5, 1.0, 2.0, 4.0, 8.0]),
    ],
)
def test_log_spaced_hits_both_ends(
    low: float, high: float, points: int, expected: list[float]
) -> None:
    values = log_spaced(low, high, points)
    assert values == pytest.approx(expected)
    ratio = values[1] / values[0]
    assert all(math.isclose(b / a, ratio, rel_tol=1e-5) for a, b in itertools.pairwise(values))


@pytest.mark.parametrize(
    ("low", "high", "points", "match"),
    [
        (1e-3, 1e-1, 1, "points must be at least 2"),
        (0.1, 0.01, 3, "need 0 < low < high"),
        (0.0, 1.0, 3, "need 0 < low < high"),
    ],
)
def test_log_spaced_rejects_bad_input(low: float, high: float, points: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        log_spaced(low, high, points)


def test_unknown_kind_names_the_known_ones() -> None:
    class Arm:
        kind = "bayes"
        arm_name = "bayes"

    with pytest.raises(ValueError, match=r"kind must be one of \['fixed', 'grid', 'lr_finder'"):
        make_strategy(Arm(), seeds=[0])


def test_strategy_refuses_empty_seeds() -> None:
    arm = _strategy("grid").arm
    with pytest.raises(ValueError, match="seeds must hold at least one seed"):
        make_strategy(arm, seeds=[])


def test_optuna_searcher_keeps_optunas_per_study_info_line_quiet() -> None:
    import logging

    import optuna

    from sweeps._ray import SearcherSpec, build_searcher, loguniform

    class Lines(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage())

    lines = Lines()
    logging.getLogger("optuna").addHandler(lines)  # beside Optuna's own (stderr) handler
    try:
        optuna.create_study()  # the line, as Optuna says it at its default verbosity
        assert any("A new study created in memory" in line for line in lines.lines)
        lines.lines.clear()
        verbosity = optuna.logging.get_verbosity()

        algo = build_searcher(SearcherSpec("optuna", seed=3), {"lr": loguniform(1e-4, 1.0)})

        assert not any("A new study created" in line for line in lines.lines)
        assert optuna.logging.get_verbosity() == verbosity  # the user's setting is kept
        assert 1e-4 <= algo.suggest("t0")["lr"] <= 1.0
    finally:
        logging.getLogger("optuna").removeHandler(lines)


def test_log_spaced_is_geometric_at_full_precision() -> None:
    values = log_spaced(1e-5, 1.0, 11)
    assert values[1] == pytest.approx(10**-4.5, rel=1e-12)  # not 3.16228e-05
    assert all(math.isclose(b / a, 10**0.5, rel_tol=1e-12) for a, b in itertools.pairwise(values))
    assert (values[0], values[-1]) == (1e-5, 1.0)


def test_grid_over_a_narrow_range_runs_every_point_once_per_seed() -> None:
    spec = load_spec(
        {
            "name": "strategies-test",
            "task": {"dataset": {"name": "shapes"}},
            "seeds": SEEDS,
            "strategies": [{"kind": "grid", "lr": {"min": 1e-3, "max": 1.00001e-3, "points": 5}}],
        }
    )
    configs = _configs(plan(spec)[0])
    for seed in SEEDS:
        lrs = [c["lr"] for c in configs if c["seed"] == seed]
        assert len(set(lrs)) == 5
        assert (min(lrs), max(lrs)) == (1e-3, 1.00001e-3)
    assert json.loads(json.dumps(configs)) == configs  # floats survive as they are


def test_random_arm_draws_its_own_learning_rates_for_each_seed() -> None:
    configs = _configs(_strategy("random"))
    per_seed = {s: [c["lr"] for c in configs if c["seed"] == s] for s in SEEDS}
    assert all(len(set(lrs)) == ARMS["random"]["trials"] for lrs in per_seed.values())
    assert not set(per_seed[0]) & set(per_seed[1])
    assert configs == _configs(_strategy("random"))


def _third_suggestion(startup_trials: int | None) -> float:
    """The third LR a seeded TPE study suggests after two told results."""
    import optuna

    from sweeps._ray_search import _optuna_sampler

    study = optuna.create_study(sampler=_optuna_sampler("tpe", 0, startup_trials))
    for loss in (0.5, 0.2):
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)})
        study.tell(trial, loss)
    third = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)})
    return float(third.params["lr"])


def test_the_cmaes_sampler_is_installed_and_runs_cma_es_on_the_lr_after_its_startup() -> None:
    import optuna

    from sweeps._ray_search import _optuna_sampler

    arm = {"kind": "optuna", "lr": {"min": 1e-4, "max": 1.0}, "sampler": "cmaes"}
    spec = {"name": "s", "task": {"dataset": {"name": "shapes"}}, "strategies": [arm]}
    assert load_spec(spec).strategies[0].sampler == "cmaes"  # a project install has cmaes
    study = optuna.create_study(sampler=_optuna_sampler("cmaes", 0, 2))
    lr = {"lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)}
    for _ in range(5):
        trial = study.ask(lr)
        study.tell(trial, (math.log10(trial.params["lr"]) + 2) ** 2)
    # the trials after the 2 at random come from CMA-ES, which keeps its state on the trial,
    # not from a fallback to independent sampling (as for a space it cannot search)
    cma = [any(k.startswith("cma:") for k in t.system_attrs) for t in study.trials]
    assert cma[2:] == [True] * 3


def test_optuna_startup_trials_hands_the_study_to_tpe_sooner() -> None:
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        arm = {"kind": "optuna", "lr": {"min": 1e-4, "max": 1.0}, "startup_trials": 2}
        spec = {"name": "s", "task": {"dataset": {"name": "shapes"}}, "strategies": [arm]}
        (search,) = plan(load_spec(spec))[0].searches()
        assert search.searcher is not None and search.searcher.startup_trials == 2
        # same seed, same first two draws; the third is TPE's with 2 startup trials, a draw
        # without
        assert _third_suggestion(None) == _third_suggestion(10)
        assert _third_suggestion(2) != _third_suggestion(None)
    finally:  # test_optuna_searcher_keeps_... needs Optuna's default verbosity
        optuna.logging.set_verbosity(verbosity)


@pytest.mark.parametrize("sampler", ["random", "qmc"])
def test_startup_trials_with_a_sampler_that_has_none_is_refused(sampler: str) -> None:
    arm: dict[str, Any] = {"kind": "optuna", "lr": {"min": 1e-4, "max": 1.0}, "sampler": sampler}
    spec = {"name": "s", "task": {"dataset": {"name": "shapes"}}, "strategies": [arm]}
    load_spec(spec)  # without startup_trials: fine
    arm["startup_trials"] = 3
    with pytest.raises(SpecError, match="startup_trials applies to the samplers"):
        load_spec(spec)


def test_more_startup_trials_than_trials_is_refused() -> None:
    """The study would draw every trial at random: a TPE arm that never models anything."""
    arm: dict[str, Any] = {"kind": "optuna", "lr": {"min": 1e-4, "max": 1.0}, "trials": 6}
    spec = {"name": "s", "task": {"dataset": {"name": "shapes"}}, "strategies": [arm]}
    load_spec({**spec, "strategies": [{**arm, "startup_trials": 5}]})  # the last one is TPE's
    with pytest.raises(SpecError, match=r"strategies\.0.*startup_trials \(6\) must be below "):
        load_spec({**spec, "strategies": [{**arm, "startup_trials": 6}]})


# --- exact grid points, log-uniform draws, the metric searchers optimise ----------------------


@pytest.mark.parametrize(
    ("low", "high", "points", "expected"),
    [
        (5e-5, 0.5, 5, [5e-5, 5e-4, 5e-3, 5e-2, 0.5]),
        (3e-4, 0.3, 4, [3e-4, 3e-3, 3e-2, 0.3]),
        (2e-4, 2e-2, 3, [2e-4, 2e-3, 2e-2]),
        (1e-7, 10.0, 9, [1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0]),
        (0.5, 8.0, 5, [0.5, 1.0, 2.0, 4.0, 8.0]),
    ],
)
def test_log_spaced_gives_round_points_exactly(
    low: float, high: float, points: int, expected: list[float]
) -> None:
    """No float drift: 5e-4 is 0.0005 (params, tags, `best --format spec`), not 0.00049999..."""
    assert log_spaced(low, high, points) == expected


def test_grid_arm_runs_each_exact_point_once_per_seed() -> None:
    spec = load_spec(
        {
            "name": "strategies-test",
            "task": {"dataset": {"name": "shapes"}},
            "seeds": SEEDS,
            "strategies": [{"kind": "grid", "lr": {"min": 5e-5, "max": 0.5, "points": 5}}],
        }
    )
    configs = _configs(plan(spec)[0])
    expected = [5e-5, 5e-4, 5e-3, 0.05, 0.5]
    for seed in SEEDS:
        assert sorted(c["lr"] for c in configs if c["seed"] == seed) == expected


def test_log_spaced_refuses_more_points_than_the_range_holds() -> None:
    low = 1e-3
    high = math.nextafter(math.nextafter(low, 1.0), 1.0)  # two floats above: no room for 5 points
    with pytest.raises(ValueError, match=r"points=5 .* are not all distinct"):
        log_spaced(low, high, 5)


@pytest.mark.parametrize("kind", ["optuna", "random"])
def test_sampled_arms_draw_log_uniformly(kind: str) -> None:
    """Over [1e-4, 1] half the draws of a log-uniform LR lie below 1e-2 (uniform: 1 in 100)."""
    arm = {**ARMS[kind], "trials": 100}
    spec = {
        "name": "s",
        "task": {"dataset": {"name": "shapes"}},
        "seeds": SEEDS,
        "strategies": [arm],
    }
    lrs = [c["lr"] for c in _configs(plan(load_spec(spec))[0])]
    assert len(lrs) == 200 and all(1e-4 <= lr <= 1.0 for lr in lrs)
    assert 0.35 < sum(lr < 1e-2 for lr in lrs) / len(lrs) < 0.65


@pytest.mark.parametrize("kind", ["optuna", "random"])
def test_searchers_minimise_the_best_valid_loss_trials_report(kind: str) -> None:
    from sweeps._ray import build_searcher

    assert SEARCH_METRIC == "best_valid_loss"  # the key sweeps._reporter reports every epoch
    for search in _strategy(kind).searches():
        assert search.searcher is not None
        assert (search.searcher.metric, search.searcher.mode) == ("best_valid_loss", "min")
        if kind == "optuna":
            algo = build_searcher(search.searcher, search.param_space)
            assert (algo.metric, algo.mode) == ("best_valid_loss", "min")
            assert algo._sampler._constant_liar  # parallel asks see the trials still running


def test_an_errored_optuna_trial_run_again_by_resume_reaches_its_study(tmp_path: Any) -> None:
    """Ray's OptunaSearch ignores a second end of a trial ("already finished"): the value of a
    trial that errored, then finished when ``resume_sweep`` ran it again, never reached TPE."""
    from ray.tune.search import Searcher

    from sweeps._ray import _SearchesInOne

    (search,) = _strategy("optuna").searches()[:1]
    searches = _SearchesInOne([search], metric="best_valid_loss", mode="min")
    config = searches.suggest("t1")
    assert config is not None and config is not Searcher.FINISHED
    searches.on_trial_complete("t1", error=True)  # errored for good in the first run
    searches.save(str(tmp_path / "searcher.pkl"))
    resumed = _SearchesInOne([search], metric="best_valid_loss", mode="min")
    resumed.restore(str(tmp_path / "searcher.pkl"))
    resumed.on_trial_complete("t1", result={"best_valid_loss": 0.25})
    resumed.on_trial_complete("t1", result={"best_valid_loss": 0.25})  # Tune's echo: no third
    (study,) = [algo._ot_study for algo in resumed._optuna.values()]
    ended = [(t.state.name, t.value, t.params) for t in study.trials]
    assert ended == [("FAIL", None, {"lr": config["lr"]}), ("COMPLETE", 0.25, {"lr": config["lr"]})]
