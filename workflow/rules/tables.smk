rule pairs_table:
    input:
        comparisons=expand(
            "results/ssim/{image}/{prompt}.tsv", image=IMAGES, prompt=PROMPTS
        ),
        fidelity=expand("results/fidelity/{image}.tsv", image=IMAGES),
        noise_floor=expand("results/noise_floor/{image}.tsv", image=IMAGES),
    output:
        pairs=report(
            "results/tables/pairs.csv",
            caption="../report/pairs.rst",
            category="Tables",
            labels={"table": "pairs"},
        ),
        fidelity="results/tables/fidelity.csv",
        noise_floor="results/tables/noise_floor.csv",
    log:
        "logs/tables/pairs.log",
    params:
        prompts=list(PROMPTS.values()),
    run:
        steps.collect_tables(
            input.comparisons,
            input.fidelity,
            input.noise_floor,
            params.prompts,
            output.pairs,
            output.fidelity,
            output.noise_floor,
            log[0],
        )


rule summary_tables:
    input:
        pairs="results/tables/pairs.csv",
        noise_floor="results/tables/noise_floor.csv",
        fidelity="results/tables/fidelity.csv",
    output:
        summary_csv=report(
            "results/tables/summary.csv",
            caption="../report/summary.rst",
            category="Tables",
            labels={"table": "summary (CSV)"},
        ),
        summary_md="results/tables/summary.md",
        summary_tex=report(
            "results/tables/summary.tex",
            caption="../report/summary.rst",
            category="Tables",
            labels={"table": "summary (LaTeX)"},
        ),
        trend_csv=report(
            "results/tables/trend.csv",
            caption="../report/trend.rst",
            category="Tables",
            labels={"table": "emphasis trend"},
        ),
        trend_md="results/tables/trend.md",
        trend_tex="results/tables/trend.tex",
    log:
        "logs/tables/summary.log",
    params:
        prompts=list(PROMPTS.values()),
        model_name=model_params()["name"],
        tiny=config["model"]["source"] == "tiny",
        lpips_network=config["metrics"]["lpips"]["network"],
    run:
        steps.summarise(
            input.pairs,
            input.noise_floor,
            input.fidelity,
            **params,
            outputs=dict(output.items()),
            log=log[0],
        )
