# One job per image scores every prompt's and dose's pairs; it and the noise
# floor keep update() outputs made from unchanged inputs, since the generate
# job touches all of an image's folders when it regenerates only some (see
# Ledger in promptsweep.jobs).
rule pair_metrics:
    input:
        generated=generated_input,
        weights=weight_files("pair"),
    output:
        tables=update(
            expand("results/pair_metrics/{{image}}/{prompt}.tsv", prompt=VARIANTS)
        ),
        ssim_maps=update(directory("results/ssim_maps/{image}")),
    log:
        "logs/pair_metrics/{image}.log",
    params:
        pairs=lambda wildcards: PLAN.pair_files(wildcards.image),
        settings=registry.metric_settings(config["metrics"], "pair"),
    run:
        metric_jobs.pair_metrics(
            image_id=wildcards.image,
            prompts=VARIANTS,
            seeds=SEEDS,
            **params.pairs,
            weights=input.weights,
            settings=params.settings,
            outputs=output.tables,
            log=log[0],
        )


# Every per-image metric of the images of one scope (the study's conditions,
# the grid search's selection, either search's evaluation) and one image.
rule image_metrics:
    input:
        edge_map="results/edges/{image}.png",
        scored=lambda wildcards: PLAN.scored_images(
            wildcards.scope, wildcards.image
        ).inputs,
        weights=weight_files("image"),
    output:
        "results/{scope}/{image}.tsv",
    log:
        "logs/{scope}/{image}.log",
    wildcard_constraints:
        scope="|".join(IMAGE_METRICS_SCOPES),
    params:
        scored=lambda wildcards: PLAN.scored_images(
            wildcards.scope, wildcards.image
        ).job_arguments(),
        canny_low=config["generation"]["canny_low"],
        canny_high=config["generation"]["canny_high"],
        subject=lambda wildcards: IMAGES[wildcards.image].prompt,
        settings=registry.metric_settings(config["metrics"], "image"),
    run:
        metric_jobs.image_metrics(
            image_id=wildcards.image,
            edge_map=input.edge_map,
            **params.scored,
            canny_low=params.canny_low,
            canny_high=params.canny_high,
            subject=params.subject,
            settings=params.settings,
            output=output[0],
            log=log[0],
        )


rule noise_floor:
    input:
        generated=generated_input,
        weights=weight_files("pair"),
    output:
        update("results/noise_floor/{image}.tsv"),
    log:
        "logs/noise_floor/{image}.log",
    params:
        baselines=lambda wildcards: PLAN.generated(wildcards.image, BASELINE, "png"),
        records=lambda wildcards: PLAN.generated(wildcards.image, BASELINE, "json"),
        settings=registry.metric_settings(config["metrics"], "pair"),
    run:
        metric_jobs.noise_floor(
            image_id=wildcards.image,
            seeds=SEEDS,
            **params,
            weights=input.weights,
            output=output[0],
            log=log[0],
        )
