if IMAGES_PER_GENERATION_JOB == 1:

    rule generate:
        input:
            edge_map="results/edges/{image}.png",
            weights="results/models/weights.json",
        output:
            images=generated("{image}", "{condition}", "png"),
            records=generated("{image}", "{condition}", "json"),
        log:
            "logs/generate/{image}/{condition}.log",
        resources:
            gpu=1,
        params:
            request=lambda wildcards: generation_request(
                wildcards.image, wildcards.condition
            ),
        run:
            generate_jobs.generate(
                edge_maps=[input.edge_map],
                weights=input.weights,
                images=[output.images],
                records=[output.records],
                requests=[params.request],
                log=log[0],
            )

else:
    # Several images per job, one condition each: the pipeline is loaded once
    # per job, every pair keeps its own files and request, and a changed
    # prompt reruns only the shards of that prompt.
    for shard_index, shard in enumerate(image_shards()):

        rule:
            name:
                f"generate_shard{shard_index}"
            input:
                edge_maps=[f"results/edges/{image}.png" for image in shard],
                weights="results/models/weights.json",
            output:
                images=[
                    path
                    for image in shard
                    for path in generated(image, "{condition}", "png")
                ],
                records=[
                    path
                    for image in shard
                    for path in generated(image, "{condition}", "json")
                ],
            log:
                f"logs/generate/shard{shard_index}/{{condition}}.log",
            resources:
                gpu=1,
            params:
                requests=lambda wildcards, shard=shard: [
                    generation_request(image, wildcards.condition) for image in shard
                ],
                shard=shard,
            run:
                generate_jobs.generate(
                    edge_maps=input.edge_maps,
                    weights=input.weights,
                    images=[
                        generated(image, wildcards.condition, "png")
                        for image in params.shard
                    ],
                    records=[
                        generated(image, wildcards.condition, "json")
                        for image in params.shard
                    ],
                    requests=params.requests,
                    log=log[0],
                )
