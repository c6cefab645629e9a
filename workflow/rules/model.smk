rule tiny_model:
    output:
        directory("results/models/tiny"),
    log:
        "logs/model/tiny.log",
    run:
        steps.write_tiny_model(output[0], log[0])


rule model_weights:
    input:
        tiny_model_input,
    output:
        "results/models/weights.json",
    log:
        "logs/model/weights.log",
    params:
        model=model_params(),
    run:
        steps.resolve_model(
            params.model, input[0] if input else None, output[0], log[0]
        )
