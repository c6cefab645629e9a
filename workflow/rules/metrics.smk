rule pair_metrics:
    input:
        baselines=generated("{image}", BASELINE, "png"),
        variants=generated("{image}", "{prompt}", "png"),
        baseline_records=generated("{image}", BASELINE, "json"),
        variant_records=generated("{image}", "{prompt}", "json"),
        weights=weight_files("pair"),
    output:
        table="results/pair_metrics/{image}/{prompt}.tsv",
        ssim_maps=expand(
            "results/ssim_maps/{{image}}/{{prompt}}/seed{seed}.png", seed=SEEDS
        ),
    log:
        "logs/pair_metrics/{image}/{prompt}.log",
    params:
        settings=registry.metric_settings(config["metrics"], "pair"),
    run:
        metric_jobs.pair_metrics(
            image_id=wildcards.image,
            prompt_id=wildcards.prompt,
            seeds=SEEDS,
            baselines=input.baselines,
            variants=input.variants,
            baseline_records=input.baseline_records,
            variant_records=input.variant_records,
            settings=params.settings,
            output=output.table,
            ssim_maps=output.ssim_maps,
            log=log[0],
        )


rule image_metrics:
    input:
        edge_map="results/edges/{image}.png",
        images=lambda wildcards: [
            path
            for condition in CONDITIONS
            for path in generated(wildcards.image, condition, "png")
        ],
        records=lambda wildcards: [
            path
            for condition in CONDITIONS
            for path in generated(wildcards.image, condition, "json")
        ],
        weights=weight_files("image"),
    output:
        "results/image_metrics/{image}.tsv",
    log:
        "logs/image_metrics/{image}.log",
    params:
        canny_low=config["generation"]["canny_low"],
        canny_high=config["generation"]["canny_high"],
        subject=lambda wildcards: IMAGES[wildcards.image].prompt,
        settings=registry.metric_settings(config["metrics"], "image"),
    run:
        metric_jobs.image_metrics(
            image_id=wildcards.image,
            edge_map=input.edge_map,
            conditions=CONDITIONS,
            seeds=SEEDS,
            images=input.images,
            records=input.records,
            canny_low=params.canny_low,
            canny_high=params.canny_high,
            subject=params.subject,
            settings=params.settings,
            output=output[0],
            log=log[0],
        )


rule noise_floor:
    input:
        baselines=generated("{image}", BASELINE, "png"),
        records=generated("{image}", BASELINE, "json"),
        weights=weight_files("pair"),
    output:
        "results/noise_floor/{image}.tsv",
    log:
        "logs/noise_floor/{image}.log",
    params:
        settings=registry.metric_settings(config["metrics"], "pair"),
    run:
        metric_jobs.noise_floor(
            image_id=wildcards.image,
            seeds=SEEDS,
            baselines=input.baselines,
            records=input.records,
            settings=params.settings,
            output=output[0],
            log=log[0],
        )
