# cache_images (only with data.image_cache_size set): every cohort image, per split, decoded once
# into uint8 grayscale crops at the model's input size -> data/processed/image_cache/ (not the
# grounding table's counterfactuals: a change there would rerun every pixel reader). The
# pixel-reading stages (embed_images, train, evaluate, evaluate_grounding) then read the crops
# (image_cache_input / image_cache_arg below) instead of the JPEGs. A CPU rule: it decodes.
rule cache_images:
    input:
        code=code("cache-images"),
        cohort=COHORT,
    output:
        directory(IMAGE_CACHE),
    params:
        file=PARAMS,
        cfg=cfg_params(*declared("cache-images")),
    log:
        f"{LOGS}/cache_images.log",
    benchmark:
        f"{BENCH}/cache_images.tsv"
    threads: 1
    resources:
        **cpu_resources(),
    shell:
        "nast cache-images --params {params.file} --cohort {input.cohort} --out {output}"
        " > {log} 2>&1"
