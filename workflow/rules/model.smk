rule tiny_model:
    output:
        directory("results/models/tiny"),
    log:
        "logs/model/tiny.log",
    params:
        family=config["model"]["family"],
    run:
        model_jobs.tiny_model(family=params.family, output=output[0], log=log[0])


rule model_weights:
    input:
        unpack(built_in_model_input),
    output:
        "results/models/weights.json",
    log:
        "logs/model/weights.log",
    params:
        model=PLAN.model_params(),
    run:
        model_jobs.model_weights(
            model=params.model,
            tiny_directory=input.get("tiny"),
            output=output[0],
            log=log[0],
        )
