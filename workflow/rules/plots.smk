rule summary_plots:
    input:
        pairs="results/tables/pairs.csv",
        summary="results/tables/summary.csv",
        noise_floor="results/tables/noise_floor.csv",
        quality_summary="results/tables/quality_summary.csv",
    output:
        by_prompt=report(
            "results/plots/ssim_by_prompt.png",
            caption="../report/ssim_by_prompt.rst",
            category="Plots",
            subcategory=REPORT_SUBCATEGORY,
            labels={"plot": "SSIM by prompt"},
        ),
        effect_vs_emphasis=report(
            "results/plots/effect_vs_emphasis.png",
            caption="../report/effect_vs_emphasis.rst",
            category="Plots",
            subcategory=REPORT_SUBCATEGORY,
            labels={"plot": "effect vs emphasis"},
        ),
        heatmap=report(
            "results/plots/heatmap.png",
            caption="../report/heatmap.rst",
            category="Plots",
            subcategory=REPORT_SUBCATEGORY,
            labels={"plot": "image x prompt heatmap"},
        ),
        quality_forest=report(
            "results/plots/quality_forest.png",
            caption="../report/quality_forest.rst",
            category="Plots",
            subcategory=REPORT_SUBCATEGORY,
            labels={"plot": "quality deltas"},
        ),
        change_vs_gain=report(
            "results/plots/change_vs_gain.png",
            caption="../report/change_vs_gain.rst",
            category="Plots",
            subcategory=REPORT_SUBCATEGORY,
            labels={"plot": "change against gain"},
        ),
        svgs=[
            "results/plots/ssim_by_prompt.svg",
            "results/plots/effect_vs_emphasis.svg",
            "results/plots/heatmap.svg",
            "results/plots/quality_forest.svg",
            "results/plots/change_vs_gain.svg",
        ],
    log:
        "logs/plots/summary.log",
    params:
        quality_metric=config["plots"]["quality_metric"],
        prompt_order=list(PROMPTS),
        model_name=PLAN.model_params()["name"],
        caveat=MODEL_CAVEAT,
    run:
        plot_jobs.summary_plots(
            **input, **params, outputs=dict(output.items()), log=log[0]
        )


rule contact_sheet:
    input:
        edge_map="results/edges/{image}.png",
        generated=generated_input,
    output:
        report(
            "results/plots/sheets/{image}.png",
            caption="../report/contact_sheet.rst",
            category="Contact sheets",
            subcategory=REPORT_SUBCATEGORY,
            labels={"image": "{image}"},
        ),
    log:
        "logs/plots/sheet_{image}.log",
    params:
        labels=CONDITIONS,
        title=lambda wildcards: f"{wildcards.image} ({IMAGES[wildcards.image].prompt}), seed {SEEDS[0]}, {PLAN.model_params()['name']}",
        caveat=MODEL_CAVEAT,
    run:
        plot_jobs.contact_sheet(
            image_id=wildcards.image,
            edge_map=input.edge_map,
            labels=params.labels,
            images=[
                PLAN.generated(wildcards.image, condition, "png")[0]
                for condition in CONDITIONS
            ],
            title=params.title,
            caveat=params.caveat,
            output=output[0],
            log=log[0],
        )


rule gallery:
    input:
        pairs="results/tables/pairs.csv",
        dose_pair_metrics=expand(
            "results/pair_metrics/{image}/{prompt}.tsv",
            image=IMAGES,
            prompt=DOSE_CONDITIONS,
        ),
        dose_image_metrics=expand(
            "results/image_metrics/{image}/{condition}.tsv",
            image=IMAGES,
            condition=[BASELINE, *DOSE_CONDITIONS] if DOSE_CONDITIONS else [],
        ),
        search_metrics=PLAN.search_gallery_inputs(),
    output:
        report(
            directory("results/gallery"),
            htmlindex="index.html",
            caption="../report/gallery.rst",
            category="Gallery",
            subcategory=REPORT_SUBCATEGORY,
        ),
    log:
        "logs/plots/gallery.log",
    params:
        **PLAN.search_gallery_params(),
        doses=EMPHASIS.dose_conditions,
        kinds={prompt_id: prompt.kind for prompt_id, prompt in PROMPTS.items()},
        edge_maps={image: PLAN.edge_map(image) for image in IMAGES},
        title=f"promptsweep: {PLAN.model_params()['name']}",
    run:
        gallery_jobs.gallery(**input, **params, output=output[0], log=log[0])
