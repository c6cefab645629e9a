"""The optimisation search through the real ``snakemake`` command line, on
the reduced study (2 images, 64 px, 2 steps): one selection image, one
held-out evaluation image, random search, CMA-ES and gradient ascent with a
small budget."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import Study
from test_emphasis_workflow import with_emphasis
from promptsweep.search.evaluation import COLUMNS, TOKENS_COLUMNS

pytestmark = pytest.mark.workflow

SEARCH_KEYS = {
    "optimisers": "[random, cmaes, gradient]",
    "objective": "sharpness",
    "budget": "4",
    "selection_seeds": "[5, 6]",
    "evaluation_seeds": "[7]",
    "selection_images": "[square]",
    "evaluation_images": "[blocks]",
    "tolerances": "{edge_f1: 1.0}",
}


def search_config(**changes: str) -> str:
    keys = {**SEARCH_KEYS, **changes}
    return "emphasis:\n  search:\n" + "".join(f"    {key}: {value}\n" for key, value in keys.items())


SEARCH = search_config()
PROMPTS = ["good", "best", "bad"]
TARGETS = [
    "results/tables/latent_search.csv",
    "results/plots/search_convergence.png",
    "results/plots/search_contact_sheet.png",
]


@pytest.fixture(scope="module")
def search_study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    study = with_emphasis(Study(tmp_path_factory.mktemp("search")), SEARCH)
    # The search's own targets: the rest of the study is tested elsewhere.
    study.snakemake(*TARGETS)
    return study


def test_each_optimiser_writes_its_trials_within_the_budget(search_study: Study) -> None:
    for optimiser in ("random", "cmaes", "gradient"):
        trials = pd.read_csv(search_study.root / f"results/search/{optimiser}/trials.csv")
        # 4 generations pay for 2 trials of 1 image x 2 seeds.
        assert trials["trial"].tolist() == [1, 2]
        assert set(trials["optimiser"]) == {optimiser}
        assert {*PROMPTS, "objective", "feasible", "seconds", "best_so_far", "edge_f1_drop_over_tolerance"} <= set(trials.columns)
        assert trials[PROMPTS].abs().to_numpy().max() <= 3.0
    # Gradient ascent starts at the baseline and takes a step.
    gradient = pd.read_csv(search_study.root / "results/search/gradient/trials.csv")
    assert gradient.loc[0, PROMPTS].tolist() == [0, 0, 0] and gradient.loc[1, PROMPTS].abs().sum() > 0
    words = pd.read_csv(search_study.root / "results/search/words/trials.csv")
    assert words["prompt_id"].tolist() == PROMPTS
    # A word prompt's point is weight 1 on its own direction.
    assert [[float(words.loc[i, p]) for p in PROMPTS] for i in range(3)] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_best_points_are_generated_on_the_held_out_image_only(search_study: Study) -> None:
    root = search_study.root / "results/search/evaluation"
    assert sorted(path.name for path in root.iterdir()) == ["blocks"]
    conditions = sorted(path.name for path in (root / "blocks").iterdir())
    assert conditions == ["baseline", "best-word", "search-cmaes", "search-gradient", "search-random"]
    best = json.loads((search_study.root / "results/search/cmaes/best.json").read_text())
    record = json.loads((root / "blocks/search-cmaes/seed7.json").read_text())
    assert record["search"]["point"] == best["point"]
    assert [term[0] for term in record["embedding"]["terms"]] == PROMPTS
    assert [term[1] for term in record["embedding"]["terms"]] == [best["point"][p] for p in PROMPTS]
    # Nothing is generated for the selection image on the evaluation split.
    assert not (search_study.root / "results/search/evaluation/square").exists()


def test_latent_search_table_rows_and_plots(search_study: Study) -> None:
    table = pd.read_csv(search_study.root / "results/tables/latent_search.csv")
    assert list(table.columns) == list(COLUMNS)
    assert table["optimiser"].tolist() == ["random", "cmaes", "gradient", "words"]
    assert table["candidate"].tolist() == ["search-random", "search-cmaes", "search-gradient", "best-word"]
    assert (table["evaluations"] == [4, 4, 4, 6]).all()
    assert set(table["selection_images"]) == {"square"} and set(table["evaluation_images"]) == {"blocks"}
    assert table.loc[table["optimiser"] == "words", "vs_best_word_mean"].isna().all()
    for name in ("search_convergence.png", "search_contact_sheet.png"):
        assert (search_study.root / "results/plots" / name).stat().st_size > 0


def test_the_gallery_shows_each_held_out_choice_against_its_baseline(search_study: Study) -> None:
    search_study.snakemake("results/gallery")
    data = (search_study.root / "results/gallery/data.js").read_text()
    pairs = json.loads(data[data.index("{") : data.rindex("}") + 1])["pairs"]
    searched = [pair for pair in pairs if pair["kind"] == "latent search"]
    # Each of the four choices on the held-out image, with its one seed.
    assert sorted(pair["prompt_id"] for pair in searched) == ["best-word", "search-cmaes", "search-gradient", "search-random"]
    assert {pair["image_id"] for pair in searched} == {"blocks"} and {pair["seed"] for pair in searched} == {7}
    assert all(pair["values"]["sharpness_delta"] is not None and 0 < pair["values"]["ssim"] <= 1 for pair in searched)


def test_selection_never_reads_the_evaluation_split(search_study: Study) -> None:
    """The loop jobs' inputs are the selection image's edge map and the
    model: the evaluation image cannot reach a choice."""
    planned = search_study.snakemake("--dry-run", "--forcerun", "search_trials", *TARGETS).stdout
    blocks = [block for block in planned.split("\n\n") if "rule search_trials:" in block]
    assert len(blocks) == 4
    for block in blocks:
        assert "results/edges/square.png" in block and "blocks" not in block


def test_a_killed_search_resumes_from_its_journal(search_study: Study) -> None:
    """The journal outlives the outputs: with them deleted, a rerun of the
    same search resumes from every finished trial and generates none again."""
    (search_study.root / "results/search/random/trials.csv").unlink()
    search_study.snakemake("results/search/random/trials.csv")
    log = (search_study.root / "logs/search/random.log").read_text()
    assert "resumed from 2 finished trials" in log
    assert "trial 1/2" not in log and "trial 2/2" not in log


@pytest.fixture(scope="module")
def tokens_study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    search = search_config(optimisers="[gradient]", space="tokens", tokens="2")
    study = with_emphasis(Study(tmp_path_factory.mktemp("tokens")), search)
    study.snakemake("results/tables/latent_search.csv", "results/plots/search_contact_sheet.png")
    return study


def test_a_tokens_search_follows_the_projected_words_and_evaluates_soft_tokens_and_words(tokens_study: Study) -> None:
    root = tokens_study.root
    trials = pd.read_csv(root / "results/search/gradient/trials.csv", keep_default_na=False)
    assert trials["trial"].tolist() == [1, 2]
    # The table shows each trial's words, not the soft tokens' values.
    assert "words" in trials.columns and not any(column.startswith("w") and column[1:].isdigit() for column in trials)
    assert all(trials["words"])
    best = json.loads((root / "results/search/gradient/best.json").read_text())
    assert len(best["tokens"]["embeddings"]) == 2 and len(best["tokens"]["token_ids"]) == 2
    assert best["tokens"]["words"] in set(trials["words"])
    assert isinstance(best["tokens"]["words_round_trip"], bool)

    evaluated = root / "results/search/evaluation/blocks"
    assert sorted(path.name for path in evaluated.iterdir()) == [
        "baseline", "best-word", "search-gradient", "search-gradient-words",
    ]
    soft = json.loads((evaluated / "search-gradient/seed7.json").read_text())
    assert soft["embedding"]["method"] == "soft tokens"
    assert soft["embedding"]["tokens"] == best["tokens"]["embeddings"]
    words = json.loads((evaluated / "search-gradient-words/seed7.json").read_text())
    assert words["prompt"] == f"{soft['prompt']}, {best['tokens']['words']}" and "embedding" not in words

    table = pd.read_csv(root / "results/tables/latent_search.csv", keep_default_na=False)
    assert list(table.columns) == list(TOKENS_COLUMNS)
    assert table["optimiser"].tolist() == ["gradient", "gradient words", "words"]
    assert table["candidate"].tolist() == ["search-gradient", "search-gradient-words", "best-word"]
    assert set(table["space"]) == {"tokens"}
    tokens_rows = table[table["optimiser"].str.startswith("gradient")]
    assert (tokens_rows["projected_words"] == best["tokens"]["words"]).all()
    assert table.loc[table["optimiser"] == "gradient words", "selection_objective"].astype(float).iloc[0] == best["objective"]


def test_the_gradient_follows_a_learned_score_with_its_weights(study: Study) -> None:
    """The aesthetic score as the objective: its CLIP and predictor (tiny,
    random, in their real layouts) score the trials and give the gradient."""
    from clip_weights import write_tiny_clip
    from promptsweep.preference import AESTHETIC_EMBEDDING_SIZE
    from test_preference import write_aesthetic_mlp

    write_tiny_clip(study.root / "weights" / "clip", projection_dim=AESTHETIC_EMBEDDING_SIZE)
    write_aesthetic_mlp(study.root / "weights" / "mlp.pth")
    metrics = "metrics:\n  aesthetic:\n    clip_model: weights/clip\n    mlp: weights/mlp.pth\n"
    with_emphasis(study, metrics + search_config(optimisers="[gradient]", objective="aesthetic"))
    study.snakemake("results/search/gradient/trials.csv")
    trials = pd.read_csv(study.root / "results/search/gradient/trials.csv")
    assert trials["objective"].notna().all()
    # The first trial is the baseline; the gradient moved the second.
    assert trials.loc[0, PROMPTS].tolist() == [0, 0, 0] and trials.loc[1, PROMPTS].abs().sum() > 0


def test_a_killed_tokens_search_resumes_from_its_journal(tokens_study: Study) -> None:
    best = (tokens_study.root / "results/search/gradient/best.json").read_text()
    (tokens_study.root / "results/search/gradient/trials.csv").unlink()
    tokens_study.snakemake("results/search/gradient/trials.csv")
    log = (tokens_study.root / "logs/search/gradient.log").read_text()
    assert "resumed from 2 finished trials" in log and "trial 1/2" not in log
    # The same vocabulary, start and trials: the same best soft tokens.
    assert (tokens_study.root / "results/search/gradient/best.json").read_text() == best


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"evaluation_images": "[square]"}, "emphasis.search.selection_images"),
        ({"budget": "1"}, "emphasis.search.budget"),
        ({"optimisers": "[random, annealing]"}, "emphasis.search.optimisers"),
        ({"space": "tokens2"}, "emphasis.search.space"),
        ({"space": "tokens"}, "emphasis.search.optimisers"),
        ({"optimisers": "[gradient]", "space": "tokens", "tokens": "20"}, "emphasis.search.tokens"),
        ({"optimisers": "[gradient]", "objective": "brisque"}, "emphasis.search.objective"),
        # A learned metric whose weights metrics.aesthetic does not name would be NaN in every trial.
        ({"objective": "aesthetic"}, "emphasis.search.objective"),
    ],
)
def test_a_bad_search_config_stops_before_any_job_naming_the_key(study: Study, changes: dict[str, str], key: str) -> None:
    with_emphasis(study, search_config(**changes))
    result = study.snakemake("--dry-run", check=False)
    assert result.returncode != 0
    assert key in result.stderr + result.stdout
    assert not (study.root / "results").exists()
