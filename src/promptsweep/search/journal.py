"""The search loop, resumable: propose, generate and score, tell, on an
Optuna journal file.

Optuna's ``JournalStorage`` appends every change of a trial to the journal
as it happens, so a trial is on disk as soon as it finishes. A rerun of a
killed search loads the study from the journal and:

* keeps every finished (COMPLETE) trial, and counts it towards the budget;
* marks a trial still RUNNING (the one the kill interrupted) as FAIL and
  enqueues its parameters, so that the next trial retries them;
* reseeds the optimiser from (seed, trials in the journal), so a random
  search does not redraw the points it drew before the kill.

One search runs per journal at a time (the workflow runs it as one job):
a RUNNING trial is taken to be a dead one.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from promptsweep.emphasis import BUDGET_KEY, EmphasisConfigError
from promptsweep.search import optimisers
from promptsweep.search.config import Bounds, Direction
from promptsweep.search.optimisers import OUTCOME_ATTR, Optimiser, StudyOptimiser, parameter_names
from promptsweep.search.optimisers.base import GRADIENT

# The study user attribute naming what the journal's search is, checked on resume.
SEARCH_ATTR = "search"
# The user attribute of a retried trial: the number of the trial it retries.
RETRY_ATTR = "retry_of"


@dataclass(frozen=True)
class Outcome:
    """What one trial measured: its objective (None when it could not be
    computed) and each constraint's value, at most 0 when the constraint
    holds (Optuna's convention; e.g. an edge-F1 drop minus its tolerance);
    for the gradient optimiser, also the objective's gradient at the point."""

    objective: float | None
    constraints: Mapping[str, float] = field(default_factory=dict)
    gradient: tuple[float, ...] | None = None
    notes: Mapping[str, str] = field(default_factory=dict)
    """What else the trials table shows of the trial (the tokens space: its words)."""

    @property
    def feasible(self) -> bool:
        """An objective, and every constraint held (a NaN constraint does not)."""
        return (
            self.objective is not None
            and math.isfinite(self.objective)
            and all(value <= 0 for value in self.constraints.values())
        )


ObjectiveFunction = Callable[[tuple[float, ...]], Outcome]


class JournalMismatchError(ValueError):
    """The journal holds a search other than the one asked for."""


def run_search(
    journal_path: Path,
    study_name: str,
    optimiser_name: str,
    bounds: Bounds,
    objective: ObjectiveFunction,
    budget_trials: int,
    direction: Direction,
    seed: int,
    settings: Mapping[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Run (or resume) the search ``study_name`` in the journal at
    ``journal_path`` until it has ``budget_trials`` finished trials (the
    grid: its points, which the budget must cover), and return its
    :func:`trials_table`.

    Each trial calls ``objective`` with the proposed point; its result and
    time go to the journal when it finishes, and a line
    ``trial k/n: objective x, best y`` to ``log``. A rerun logs how many
    finished trials it resumed from (see the module's docstring)."""
    settings = settings or {}
    journal_path.parent.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(journal_path)))
    existing = _trials_in_journal(storage, study_name)
    sampling = optimisers.sampling(optimiser_name, bounds, _stream_seed(seed, existing), settings)
    n_trials = budget_trials
    if sampling.trials is not None:
        if sampling.trials > budget_trials:
            raise EmphasisConfigError(
                f"{BUDGET_KEY}: {optimiser_name} needs {sampling.trials} trials but the budget pays for "
                f"{budget_trials}; raise {BUDGET_KEY} or give {optimiser_name} fewer points"
            )
        n_trials = sampling.trials
    study = optuna.create_study(
        storage=storage, study_name=study_name, sampler=sampling.sampler, direction=direction, load_if_exists=True
    )
    description = _jsonable(
        {"optimiser": optimiser_name, "bounds": bounds, "direction": direction, "seed": seed, "settings": settings}
    )
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if existing is None:
        study.set_user_attr(SEARCH_ATTR, description)
    else:
        _check_same_search(study, description, journal_path)
        log(f"resumed from {len(finished)} finished trials")
        _retry_interrupted(study, len(bounds), log)

    outcomes = [trial.user_attrs[OUTCOME_ATTR] for trial in finished]
    best = _best([outcome["objective"] for outcome in outcomes if outcome["feasible"]], direction)
    _run_trials(StudyOptimiser(study, bounds), objective, len(finished), n_trials, best, direction, log)
    return trials_table(optimiser_name, study.get_trials(deepcopy=False), len(bounds), direction)


def _trials_in_journal(storage: JournalStorage, study_name: str) -> int | None:
    """How many trials (any state) the study has in the journal; None when
    the journal has no such study."""
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return None
    return len(storage.get_all_trials(study_id, deepcopy=False))


def _stream_seed(seed: int, existing: int | None) -> int:
    """The sampler's seed for a run that finds ``existing`` trials in the
    journal: reproducible, and different on each resume."""
    return int(np.random.SeedSequence([seed, existing or 0]).generate_state(1)[0])


def _jsonable(value: Any) -> Any:
    """``value`` as the journal gives it back (tuples become lists)."""
    return json.loads(json.dumps(value))


def _check_same_search(study: optuna.Study, description: Mapping[str, Any], journal_path: Path) -> None:
    stored = study.user_attrs.get(SEARCH_ATTR, {})
    changed = sorted(key for key in description if stored.get(key) != description[key])
    if changed:
        raise JournalMismatchError(
            f"{journal_path}: the study {study.study_name!r} was run with other {', '.join(changed)} "
            f"({ {key: stored.get(key) for key in changed} }); delete the journal to start the search anew"
        )


def _retry_interrupted(study: optuna.Study, dimension: int, log: Callable[[str], None]) -> None:
    """Fail each trial a killed run left RUNNING and enqueue its point, so
    the next trial asked for retries it. A trial killed before all its
    parameters were drawn was never evaluated, and is only failed."""
    names = parameter_names(dimension)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        if all(name in trial.params for name in names):
            study.enqueue_trial({name: trial.params[name] for name in names}, user_attrs={RETRY_ATTR: trial.number})
            log(f"trial #{trial.number} was interrupted: marked failed, its parameters are retried")
        else:
            log(f"trial #{trial.number} was interrupted before its parameters were drawn: marked failed")


def _run_trials(
    optimiser: Optimiser,
    objective: ObjectiveFunction,
    n_finished: int,
    n_trials: int,
    best: float | None,
    direction: Direction,
    log: Callable[[str], None],
) -> None:
    """Ask, evaluate and tell until ``n_trials`` trials have finished, of
    which ``n_finished`` already had, with ``best`` their best objective."""
    for done in range(n_finished + 1, n_trials + 1):
        trial = optimiser.ask()
        start = time.perf_counter()
        outcome = objective(trial.params)
        seconds = time.perf_counter() - start
        record: dict[str, Any] = {"constraints": dict(outcome.constraints), "seconds": seconds, "notes": dict(outcome.notes)}
        if outcome.gradient is not None:
            record[GRADIENT] = list(outcome.gradient)
        optimiser.tell(trial, outcome.objective, outcome.feasible, record)
        if outcome.feasible:
            best = _best([best, outcome.objective], direction)
        infeasible = "" if outcome.feasible else " (infeasible)"
        log(f"trial {done}/{n_trials}: objective {_format(outcome.objective)}{infeasible}, best {_format(best)}")


def _best(values: Sequence[float | None], direction: Direction) -> float | None:
    present = [value for value in values if value is not None]
    if not present:
        return None
    return max(present) if direction == "maximize" else min(present)


def _format(value: float | None) -> str:
    return "none" if value is None or not math.isfinite(value) else f"{value:.3g}"


def trials_table(optimiser: str, trials: Sequence[FrozenTrial], dimension: int, direction: Direction) -> pd.DataFrame:
    """One row per finished trial of a study, in the order they ran
    (:func:`trials_frame`). Failed (interrupted) trials are left out: each
    was retried as a later trial."""
    names = parameter_names(dimension)
    finished = sorted((trial for trial in trials if trial.state == TrialState.COMPLETE), key=lambda t: t.number)
    records = []
    for trial in finished:
        outcome = trial.user_attrs[OUTCOME_ATTR]
        point = tuple(trial.params[name] for name in names)
        records.append(
            (
                point,
                Outcome(outcome["objective"], outcome["constraints"], notes=outcome.get("notes", {})),
                outcome["seconds"],
                outcome["feasible"],
            )
        )
    return trials_frame(optimiser, records, dimension, direction)


def trials_frame(
    optimiser: str,
    records: Sequence[tuple[Sequence[float], Outcome, float, bool]],
    dimension: int,
    direction: Direction,
) -> pd.DataFrame:
    """One row per (point, outcome, seconds, feasible) of ``records``: optimiser,
    trial (1, 2, ...), the parameters w0, w1, ..., the objective measured,
    whether the trial was feasible, each constraint's value, the seconds its
    objective took, its notes (e.g. ``words``), and ``best_so_far``, the best feasible objective up to
    and including the trial (NaN before the first feasible one), for a
    convergence plot."""
    names = parameter_names(dimension)
    constraints = list(dict.fromkeys(name for _, outcome, _, _ in records for name in outcome.constraints))
    notes = list(dict.fromkeys(name for _, outcome, _, _ in records for name in outcome.notes))
    rows = []
    for index, (point, outcome, seconds, feasible) in enumerate(records, start=1):
        rows.append(
            {
                "optimiser": optimiser,
                "trial": index,
                **dict(zip(names, point, strict=True)),
                "objective": math.nan if outcome.objective is None else outcome.objective,
                "feasible": feasible,
                **{name: outcome.constraints.get(name, math.nan) for name in constraints},
                "seconds": seconds,
                **{name: outcome.notes.get(name, "") for name in notes},
            }
        )
    columns = ["optimiser", "trial", *names, "objective", "feasible", *constraints, "seconds", *notes]
    table = pd.DataFrame(rows, columns=columns)
    feasible_objective = table["objective"].where(table["feasible"].astype(bool))
    # cummax/cummin leave NaN where the trial was infeasible; the best so far is the one before.
    best = feasible_objective.cummax() if direction == "maximize" else feasible_objective.cummin()
    table["best_so_far"] = best.ffill()
    return table
