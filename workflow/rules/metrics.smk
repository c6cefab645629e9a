rule ssim:
    input:
        baseline=generated("{image}", BASELINE, "png"),
        variant=generated("{image}", "{prompt}", "png"),
        baseline_records=generated("{image}", BASELINE, "json"),
        variant_records=generated("{image}", "{prompt}", "json"),
        lpips_weights=lpips_weights,
    output:
        "results/ssim/{image}/{prompt}.tsv",
    log:
        "logs/ssim/{image}/{prompt}.log",
    params:
        lpips=config["metrics"]["lpips"],
    run:
        steps.compare_pairs(
            wildcards.image,
            wildcards.prompt,
            SEEDS,
            input.baseline,
            input.variant,
            input.baseline_records,
            input.variant_records,
            params.lpips,
            output[0],
            log[0],
        )


rule fidelity:
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
    output:
        "results/fidelity/{image}.tsv",
    log:
        "logs/fidelity/{image}.log",
    params:
        low=config["generation"]["canny_low"],
        high=config["generation"]["canny_high"],
        clip_model=config["metrics"]["clip_model"],
    run:
        steps.image_fidelity(
            wildcards.image,
            input.edge_map,
            CONDITIONS,
            SEEDS,
            input.images,
            input.records,
            params.low,
            params.high,
            params.clip_model,
            output[0],
            log[0],
        )


rule noise_floor:
    input:
        baseline=generated("{image}", BASELINE, "png"),
        records=generated("{image}", BASELINE, "json"),
        lpips_weights=lpips_weights,
    output:
        "results/noise_floor/{image}.tsv",
    log:
        "logs/noise_floor/{image}.log",
    params:
        lpips=config["metrics"]["lpips"],
    run:
        steps.seed_noise_floor(
            wildcards.image,
            SEEDS,
            input.baseline,
            input.records,
            params.lpips,
            output[0],
            log[0],
        )
