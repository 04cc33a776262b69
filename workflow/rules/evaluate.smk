# evaluate: MCQ negated/affirmative accuracy and gap, contextual claims, retrieval, AUROC
# for every method and every beta of the sweep -> reports/eval/{M}.json.
rule evaluate:
    input:
        unpack(lambda wc: image_inputs(wc.method)),
        code=code("evaluate"),
        model="models/{method}",
        base=base_model(),
        cohort=COHORT,
        benchmark=BENCHMARK,
        contextual=CONTEXTUAL,
    output:
        report(
            f"{EVAL_DIR}/{{method}}.json",
            category="Evaluation",
            subcategory="Methods",
            caption="../report/eval.rst",
        ),
    params:
        file=PARAMS,
        images=lambda wc: image_args(wc.method),
        cfg=cfg_params(*declared("evaluate")),
    log:
        f"{LOGS}/evaluate/{{method}}.log",
    benchmark:
        f"{BENCH}/evaluate/{{method}}.tsv"
    threads: 1
    resources:
        **gpu_resources(),
    shell:
        "nast evaluate --params {params.file} --method {wildcards.method} --model-dir {input.model}"
        " --base {input.base}{params.images} --cohort {input.cohort} --benchmark {input.benchmark} --contextual {input.contextual}"
        " --out {output} > {log} 2>&1"


rule evaluate_sweep:
    input:
        code=code("evaluate"),
        model="models/nast-beta{beta}",
        base=base_model(),
        **image_inputs("nast"),
        cohort=COHORT,
        benchmark=BENCHMARK,
        contextual=CONTEXTUAL,
    output:
        report(
            f"{EVAL_DIR}/nast-beta{{beta}}.json",
            category="Evaluation",
            subcategory="Beta sweep",
            caption="../report/eval.rst",
        ),
    params:
        file=PARAMS,
        images=image_args("nast"),
        cfg=cfg_params(*declared("evaluate")),
    log:
        f"{LOGS}/evaluate/nast-beta{{beta}}.log",
    benchmark:
        f"{BENCH}/evaluate/nast-beta{{beta}}.tsv"
    threads: 1
    resources:
        **gpu_resources(),
    shell:
        "nast evaluate --params {params.file} --method nast-beta{wildcards.beta} --model-dir {input.model}"
        " --base {input.base}{params.images} --cohort {input.cohort} --benchmark {input.benchmark} --contextual {input.contextual}"
        " --out {output} > {log} 2>&1"
