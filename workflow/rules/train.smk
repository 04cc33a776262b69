# train: NAST and the baselines (methods from params.yaml), and the NAST beta sweep
# (nast.betas -> models/nast-beta{beta}/). Only the nast methods depend on nast.beta; they and
# the sweep depend on nast.scale and nast.normalize. The grounded methods also read the
# grounding table's train-split counterfactual pairs (and their images); so do the preference
# methods (dpo, nast-dpo: image-side pairs) wherever the grounding stages run.
rule train:
    input:
        unpack(grounded_train_inputs),
        code=code("train"),
        cohort=COHORT,
        benchmark=BENCHMARK,
        contextual=CONTEXTUAL,
        layer_weights=LAYER_WEIGHTS,
        model=base_model(),
        embeddings=EMBEDDINGS,
        **image_cache_input(TRAIN_PIXELS),
    output:
        directory("models/{method}"),
    params:
        file=PARAMS,
        cache=image_cache_arg(TRAIN_PIXELS),
        cfg=lambda wc: cfg_params(*train_keys(wc.method)),
        ground=lambda wc: (f" --grounding {GROUNDING} --grounding-embeddings {GROUNDING_EMBEDDINGS}"
                           if reads_grounding(wc.method) else ""),
    log:
        f"{LOGS}/train/{{method}}.log",
    benchmark:
        f"{BENCH}/train/{{method}}.tsv"
    threads: 1
    resources:
        **gpu_resources(),
    shell:
        "nast train --params {params.file} --method {wildcards.method} --cohort {input.cohort}"
        " --benchmark {input.benchmark} --contextual {input.contextual} --base {input.model}"
        " --embeddings {input.embeddings}{params.cache}"
        " --layer-weights {input.layer_weights}{params.ground} --out {output} > {log} 2>&1"


rule train_sweep:
    input:
        code=code("train"),
        cohort=COHORT,
        benchmark=BENCHMARK,
        contextual=CONTEXTUAL,
        layer_weights=LAYER_WEIGHTS,
        model=base_model(),
        embeddings=EMBEDDINGS,
        **image_cache_input(TRAIN_PIXELS),
    output:
        directory("models/nast-beta{beta}"),
    params:
        file=PARAMS,
        cache=image_cache_arg(TRAIN_PIXELS),
        cfg=cfg_params(*train_keys(None)),
    log:
        f"{LOGS}/train/nast-beta{{beta}}.log",
    benchmark:
        f"{BENCH}/train/nast-beta{{beta}}.tsv"
    threads: 1
    resources:
        **gpu_resources(),
    shell:
        "nast train --params {params.file} --method nast --beta {wildcards.beta} --cohort {input.cohort}"
        " --benchmark {input.benchmark} --contextual {input.contextual} --base {input.model}"
        " --embeddings {input.embeddings}{params.cache}"
        " --layer-weights {input.layer_weights} --out {output} > {log} 2>&1"
