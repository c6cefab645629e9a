"""The workflow used as a Snakemake module, deployed the way
``snakedeploy deploy-workflow`` does: ``config/`` and ``profiles/`` copied into
a fresh directory whose ``workflow/Snakefile`` declares the module."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, Study, run_snakemake

pytestmark = pytest.mark.workflow

DEPLOYED_SNAKEFILE = """\
configfile: "config/config.yaml"


module promptsweep:
    snakefile:
        "{snakefile}"
    config:
        config


use rule * from promptsweep
"""


def test_a_deployed_module_runs_a_study_to_the_end(tmp_path: Path) -> None:
    # The reduced study's config/ and images, then only what snakedeploy writes.
    (tmp_path / "reduced").mkdir()
    reduced = Study(tmp_path / "reduced")
    deployed = tmp_path / "deployed"
    shutil.copytree(reduced.root / "config", deployed / "config")
    shutil.copytree(reduced.root / "resources", deployed / "resources")
    shutil.copytree(REPO / "profiles", deployed / "profiles")
    (deployed / "workflow").mkdir()
    (deployed / "workflow" / "Snakefile").write_text(
        DEPLOYED_SNAKEFILE.format(snakefile=REPO / "workflow" / "Snakefile")
    )

    run_snakemake(deployed)
    pairs = pd.read_csv(deployed / "results/tables/pairs.csv")
    assert len(pairs) == 2 * 3 * 2  # images x prompts x seeds of the reduced study
    assert pairs["ssim"].notna().all()
    for path in ("results/tables/summary.csv", "results/plots/heatmap.png", "results/plots/sheets/square.png"):
        assert (deployed / path).is_file(), path
    # Everything came from the module: nothing of the workflow was copied.
    assert sorted(path.name for path in (deployed / "workflow").iterdir()) == ["Snakefile"]
    assert "Nothing to be done" in run_snakemake(deployed).stderr
