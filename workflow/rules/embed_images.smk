# embed_images: every cohort image (all splits) embedded once by the base model ->
# data/processed/image_embeddings/ (embeddings.npy, index.parquet, manifest.json with the base
# model's sha256). train and evaluate read it instead of re-embedding the same images with the
# frozen base vision tower (not for train.train_vision, which needs pixels); a new base model
# reruns it (the base model is its input, as for the other model rules).
rule embed_images:
    input:
        code=code("embed-images"),
        cohort=COHORT,
        model=base_model(),
    output:
        directory(EMBEDDINGS),
    params:
        file=PARAMS,
        cfg=cfg_params(*declared("embed-images")),
    log:
        f"{LOGS}/embed_images.log",
    benchmark:
        f"{BENCH}/embed_images.tsv"
    threads: 1
    resources:
        **gpu_resources(),
    shell:
        "nast embed-images --params {params.file} --cohort {input.cohort} --base {input.model}"
        " --out {output} > {log} 2>&1"
