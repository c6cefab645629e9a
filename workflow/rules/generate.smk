# One job generates every condition (baseline, prompts, doses) of its control
# images, so that the pipeline gets batches across conditions. Its output is
# the image's folder, update(): Snakemake keeps it when the job reruns (a
# changed request of any one condition reruns it), and the job regenerates
# only the images whose request, edge map or model changed; each record
# carries a fingerprint of the three. A folder, not its files, as the output:
# matching each requested file against hundreds of output patterns made
# planning a 400-image study take 187 s.
if config["images_per_generation_job"] == 1:

    rule generate:
        input:
            edge_map="results/edges/{image}.png",
            weights="results/models/weights.json",
            unchanged=lambda wildcards: unchanged_by_hand(
                PLAN.rule_name("generate"), [wildcards.image]
            ),
        output:
            update(directory(PLAN.generated_folder("{image}"))),
        log:
            "logs/generate/{image}.log",
        priority: GPU_JOB_PRIORITY
        resources:
            gpu=1,
        params:
            requests=lambda wildcards: PLAN.generation_requests(wildcards.image),
        run:
            generate_jobs.generate(
                edge_maps=[input.edge_map],
                weights=input.weights,
                requests=[params.requests],
                images=[generated_by_condition(wildcards.image, "png")],
                records=[generated_by_condition(wildcards.image, "json")],
                log=log[0],
                folders=output,
            )

else:
    # Several control images per job: the pipeline is loaded once per job.
    for shard_index, shard in enumerate(PLAN.image_shards()):

        rule:
            name:
                f"generate_shard{shard_index}"
            input:
                edge_maps=[f"results/edges/{image}.png" for image in shard],
                weights="results/models/weights.json",
                unchanged=partial(
                    unchanged_by_hand,
                    PLAN.rule_name(f"generate_shard{shard_index}"),
                    shard,
                ),
            output:
                update([directory(PLAN.generated_folder(image)) for image in shard]),
            log:
                f"logs/generate/shard{shard_index}.log",
            priority: GPU_JOB_PRIORITY
            resources:
                gpu=1,
            params:
                requests=[PLAN.generation_requests(image) for image in shard],
                shard=shard,
            run:
                generate_jobs.generate(
                    edge_maps=input.edge_maps,
                    weights=input.weights,
                    requests=params.requests,
                    images=[
                        generated_by_condition(image, "png")
                        for image in params.shard
                    ],
                    records=[
                        generated_by_condition(image, "json")
                        for image in params.shard
                    ],
                    log=log[0],
                    folders=output,
                )
