# The optimisation search (config key emphasis.search with optimisers): one
# loop job per optimiser on the selection split, the word prompts' own
# search, then every search's best on the held-out evaluation split.
if OPTIMISATION is not None:

    local_rules("search_table", "search_convergence_plot", "search_contact_sheet")

    # The journal is no output: Snakemake deletes the outputs of a failed
    # job, and a killed search must resume from its finished trials.
    rule search_trials:
        input:
            edge_maps=[
                f"results/edges/{image}.png" for image in OPTIMISATION.selection_images
            ],
            weights="results/models/weights.json",
        output:
            trials="results/search/{search}/trials.csv",
            best="results/search/{search}/best.json",
        log:
            "logs/search/{search}.log",
        wildcard_constraints:
            search="|".join(OPTIMISATION.searches),
        priority: GPU_JOB_PRIORITY
        resources:
            gpu=1,
        # The journal's name holds a digest of every setting of the search, so
        # it alone, not the long settings, reruns the job when one changes.
        params:
            journal=lambda wildcards: PLAN.search_journal(wildcards.search),
        run:
            search_jobs.search_trials(
                search=wildcards.search,
                **input,
                **search_trial_settings(wildcards.search),
                journal=params.journal,
                outputs=dict(output.items()),
                log=log[0],
            )

    rule search_evaluation:
        input:
            edge_map="results/edges/{image}.png",
            weights="results/models/weights.json",
            bests=[
                f"results/search/{search}/best.json"
                for search in OPTIMISATION.searches
            ],
        output:
            images=PLAN.search_evaluated("{image}", "png"),
            records=PLAN.search_evaluated("{image}", "json"),
        log:
            "logs/search/evaluation/{image}.log",
        wildcard_constraints:
            image="|".join(OPTIMISATION.evaluation_images),
        priority: GPU_JOB_PRIORITY
        resources:
            gpu=1,
        params:
            conditions=OPTIMISATION.conditions,
            prompt_ids=list(OPTIMISATION.space.prompt_ids),
            requests=lambda wildcards: PLAN.search_word_requests(
                wildcards.image, OPTIMISATION.evaluation_seeds
            ),
            images=lambda wildcards: PLAN.search_evaluated_by_condition(
                wildcards.image, "png"
            ),
            records=lambda wildcards: PLAN.search_evaluated_by_condition(
                wildcards.image, "json"
            ),
        run:
            search_jobs.search_evaluation(
                image_id=wildcards.image, **input, **params, log=log[0]
            )

    rule search_table:
        input:
            bests=[
                f"results/search/{search}/best.json"
                for search in OPTIMISATION.searches
            ],
            trials=[
                f"results/search/{search}/trials.csv"
                for search in OPTIMISATION.searches
            ],
            evaluation_metrics=expand(
                "results/search/evaluation_metrics/{image}.tsv",
                image=OPTIMISATION.evaluation_images,
            ),
        output:
            csv=report(
                "results/tables/latent_search.csv",
                caption="../report/optimisation_search.rst",
                category="Tables",
                subcategory=REPORT_SUBCATEGORY,
                labels={"table": "latent search"},
            ),
            md="results/tables/latent_search.md",
        log:
            "logs/tables/latent_search.log",
        params:
            conditions=OPTIMISATION.conditions,
            generations_per_trial=OPTIMISATION.generations_per_trial,
            objective=OPTIMISATION.objective,
            space=OPTIMISATION.space_name,
            prompt_ids=list(OPTIMISATION.space.prompt_ids),
            selection_images=list(OPTIMISATION.selection_images),
            evaluation_images=list(OPTIMISATION.evaluation_images),
            selection_seeds=list(OPTIMISATION.selection_seeds),
            evaluation_seeds=list(OPTIMISATION.evaluation_seeds),
        run:
            search_jobs.search_table(
                **input, **params, outputs=dict(output.items()), log=log[0]
            )

    rule search_convergence_plot:
        input:
            trials=[
                f"results/search/{search}/trials.csv"
                for search in OPTIMISATION.searches
            ],
        output:
            report(
                "results/plots/search_convergence.png",
                caption="../report/search_convergence.rst",
                category="Plots",
                subcategory=REPORT_SUBCATEGORY,
                labels={"plot": "search convergence"},
            ),
        log:
            "logs/plots/search_convergence.log",
        params:
            generations_per_trial=OPTIMISATION.generations_per_trial,
            objective=OPTIMISATION.objective,
            model_name=PLAN.model_params()["name"],
            caveat=MODEL_CAVEAT,
        run:
            search_jobs.search_convergence_plot(
                trials=dict(zip(OPTIMISATION.searches, input.trials)),
                **params,
                output=output[0],
                log=log[0],
            )

    rule search_contact_sheet:
        input:
            edge_maps=expand(
                "results/edges/{image}.png", image=OPTIMISATION.evaluation_images
            ),
            images=[
                PLAN.search_evaluated_file(
                    image, condition, OPTIMISATION.evaluation_seeds[0]
                )
                for image in OPTIMISATION.evaluation_images
                for condition in [BASELINE, *OPTIMISATION.evaluated_conditions]
            ],
        output:
            report(
                "results/plots/search_contact_sheet.png",
                caption="../report/search_contact_sheet.rst",
                category="Plots",
                subcategory=REPORT_SUBCATEGORY,
                labels={"plot": "search contact sheet"},
            ),
        log:
            "logs/plots/search_contact_sheet.log",
        params:
            images={
                image: {
                    condition: PLAN.search_evaluated_file(
                        image, condition, OPTIMISATION.evaluation_seeds[0]
                    )
                    for condition in [BASELINE, *OPTIMISATION.evaluated_conditions]
                }
                for image in OPTIMISATION.evaluation_images
            },
            seed=OPTIMISATION.evaluation_seeds[0],
            model_name=PLAN.model_params()["name"],
            caveat=MODEL_CAVEAT,
        run:
            search_jobs.search_contact_sheet(
                edge_maps=dict(
                    zip(OPTIMISATION.evaluation_images, input.edge_maps)
                ),
                **params,
                output=output[0],
                log=log[0],
            )
