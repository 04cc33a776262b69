# train: NAST and the baselines (methods from params.yaml), and the NAST beta sweep
# (nast.betas -> models/nast-beta{beta}/). Only the nast methods depend on nast.beta; they and
# the sweep depend on nast.scale and nast.normalize. The grounded methods also read the
# grounding table's train-split counterfactual pairs (and their images); so do the preference
# methods (dpo, nast-dpo: image-side pairs) wherever the grounding stages run. A method whose vision
# tower trains (train.train_vision) reads pixels (the image cache) instead of the embedding stores.
rule train:
    input:
        unpack(grounded_train_inputs),
        unpack(lambda wc: image_inputs(wc.method)),
        code=code("train"),
        cohort=COHORT,
        benchmark=BENCHMARK,
        contextual=CONTEXTUAL,
        layer_weights=LAYER_WEIGHTS,
        model=base_model(),
    output:
        directory("models/{method}"),
    params:
        file=PARAMS,
        images=lambda wc: image_args(wc.method),
        cfg=lambda wc: cfg_params(*train_keys(wc.method)),
        ground=lambda wc: grounded_train_args(wc.method),
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
        "{params.images}"
        " --layer-weights {input.layer_weights}{params.ground} --out {output} > {log} 2>&1"


rule train_sweep:
    input:
        code=code("train"),
        cohort=COHORT,
        benchmark=BENCHMARK,
        contextual=CONTEXTUAL,
        layer_weights=LAYER_WEIGHTS,
        model=base_model(),
        **image_inputs("nast"),
    output:
        directory("models/nast-beta{beta}"),
    params:
        file=PARAMS,
        images=image_args("nast"),
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
        "{params.images}"
        " --layer-weights {input.layer_weights} --out {output} > {log} 2>&1"
