rule edges:
    input:
        image_file,
    output:
        "results/edges/{image}.png",
    log:
        "logs/edges/{image}.log",
    params:
        path=lambda wildcards: IMAGES[wildcards.image].path,
        resolution=config["generation"]["resolution"],
        low=config["generation"]["canny_low"],
        high=config["generation"]["canny_high"],
    run:
        steps.make_edge_map(
            params.path,
            output[0],
            params.resolution,
            params.low,
            params.high,
            log[0],
        )
