rule edge_map:
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
        edge_jobs.edge_map(
            image=params.path,
            output=output[0],
            resolution=params.resolution,
            low=params.low,
            high=params.high,
            log=log[0],
        )
