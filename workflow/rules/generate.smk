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
        request=generation_request,
    run:
        steps.generate_condition(
            input.edge_map,
            input.weights,
            output.images,
            output.records,
            params.request,
            log[0],
        )
