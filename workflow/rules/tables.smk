rule pairs_table:
    input:
        pair_metrics=expand(
            "results/pair_metrics/{image}/{prompt}.tsv", image=IMAGES, prompt=PROMPTS
        ),
        image_metrics=expand("results/image_metrics/{image}.tsv", image=IMAGES),
        noise_floor=expand("results/noise_floor/{image}.tsv", image=IMAGES),
    output:
        pairs=report(
            "results/tables/pairs.csv",
            caption="../report/pairs.rst",
            category="Tables",
            subcategory=REPORT_SUBCATEGORY,
            labels={"table": "pairs"},
        ),
        image_metrics="results/tables/image_metrics.csv",
        noise_floor="results/tables/noise_floor.csv",
    log:
        "logs/tables/pairs.log",
    params:
        prompts=list(PROMPTS.values()),
    run:
        table_jobs.pairs_table(
            pair_metrics=input.pair_metrics,
            image_metrics=input.image_metrics,
            noise_floor=input.noise_floor,
            prompts=params.prompts,
            outputs=dict(output.items()),
            log=log[0],
        )


rule summary_tables:
    input:
        pairs="results/tables/pairs.csv",
        noise_floor="results/tables/noise_floor.csv",
        image_metrics="results/tables/image_metrics.csv",
    output:
        summary_csv=report(
            "results/tables/summary.csv",
            caption="../report/summary.rst",
            category="Tables",
            subcategory=REPORT_SUBCATEGORY,
            labels={"table": "summary (CSV)"},
        ),
        summary_md="results/tables/summary.md",
        summary_tex=report(
            "results/tables/summary.tex",
            caption="../report/summary.rst",
            category="Tables",
            subcategory=REPORT_SUBCATEGORY,
            labels={"table": "summary (LaTeX)"},
        ),
        trend_csv=report(
            "results/tables/trend.csv",
            caption="../report/trend.rst",
            category="Tables",
            subcategory=REPORT_SUBCATEGORY,
            labels={"table": "emphasis trend"},
        ),
        trend_md="results/tables/trend.md",
        trend_tex="results/tables/trend.tex",
        quality_csv=report(
            "results/tables/quality.csv",
            caption="../report/quality.rst",
            category="Tables",
            subcategory=REPORT_SUBCATEGORY,
            labels={"table": "image quality"},
        ),
        quality_summary_csv=report(
            "results/tables/quality_summary.csv",
            caption="../report/quality_summary.rst",
            category="Tables",
            subcategory=REPORT_SUBCATEGORY,
            labels={"table": "quality deltas"},
        ),
        quality_summary_md="results/tables/quality_summary.md",
        quality_summary_tex="results/tables/quality_summary.tex",
        verdict_csv="results/tables/verdict.csv",
        verdict_md=report(
            "results/tables/verdict.md",
            caption="../report/verdict.rst",
            category="Tables",
            subcategory=REPORT_SUBCATEGORY,
            labels={"table": "verdict"},
        ),
    log:
        "logs/tables/summary.log",
    params:
        prompts=list(PROMPTS.values()),
        model_name=PLAN.model_params()["name"],
        caveat=MODEL_CAVEAT,
        settings=config["metrics"],
    run:
        table_jobs.summary_tables(
            **input, **params, outputs=dict(output.items()), log=log[0]
        )


rule power_tables:
    input:
        pairs="results/tables/pairs.csv",
        noise_floor="results/tables/noise_floor.csv",
        image_metrics="results/tables/image_metrics.csv",
    output:
        power_csv=report(
            "results/tables/power.csv",
            caption="../report/power.rst",
            category="Tables",
            subcategory=REPORT_SUBCATEGORY,
            labels={"table": "power and sample size"},
        ),
        power_md="results/tables/power.md",
        power_plot=report(
            "results/plots/power.png",
            caption="../report/power_plot.rst",
            category="Plots",
            subcategory=REPORT_SUBCATEGORY,
            labels={"plot": "power against images"},
        ),
    log:
        "logs/tables/power.log",
    params:
        prompts=list(PROMPTS.values()),
        model_name=PLAN.model_params()["name"],
        caveat=MODEL_CAVEAT,
    run:
        table_jobs.power_tables(
            **input, **params, outputs=dict(output.items()), log=log[0]
        )
