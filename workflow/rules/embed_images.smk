# embed_images: every cohort image (all splits) embedded once by the base model ->
# data/processed/image_embeddings/ (embeddings.npy, index.parquet, manifest.json with the base
# model's sha256). train, evaluate and evaluate_grounding read it instead of re-embedding the same images with the
# frozen base vision tower (not a method whose tower trains, train.train_vision: it reads pixels); a new base model
# reruns it (the base model is its input, as for the other model rules).
rule embed_images:
    input:
        unpack(lambda wc: image_cache_input()),
        code=code("embed-images"),
        cohort=COHORT,
        model=base_model(),
    output:
        directory(EMBEDDINGS),
    params:
        file=PARAMS,
        cfg=cfg_params(*declared("embed-images")),
        cache=image_cache_arg(),
    log:
        f"{LOGS}/embed_images.log",
    benchmark:
        f"{BENCH}/embed_images.tsv"
    threads: 1
    resources:
        **gpu_resources(),
    shell:
        "nast embed-images --params {params.file} --cohort {input.cohort} --base {input.model}"
        "{params.cache} --out {output} > {log} 2>&1"


if GROUNDING_ON:

    # embed_images_grounding: the grounding table's images (originals, counterfactuals, controls)
    # embedded once by the base model -> data/processed/grounding_embeddings/, read by
    # evaluate_grounding and by the training of the methods that read the counterfactual pairs
    # (a store of its own, so a change of the grounding table reruns only those).
    rule embed_images_grounding:
        input:
            unpack(lambda wc: image_cache_input()),
            code=code("embed-images"),
            grounding=GROUNDING,
            cf=GROUNDING_CF,
            model=base_model(),
        output:
            directory(GROUNDING_EMBEDDINGS),
        params:
            file=PARAMS,
            cfg=cfg_params(*declared("embed-images")),
            cache=image_cache_arg(),
        log:
            f"{LOGS}/embed_images_grounding.log",
        benchmark:
            f"{BENCH}/embed_images_grounding.tsv"
        threads: 1
        resources:
            **gpu_resources(),
        shell:
            "nast embed-images --params {params.file} --grounding {input.grounding} --base {input.model}"
            "{params.cache} --out {output} > {log} 2>&1"
