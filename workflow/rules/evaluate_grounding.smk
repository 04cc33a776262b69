# evaluate_grounding: counterfactual polarity (cf_pos_acc / cf_neg_acc and the controls),
# localisation (loc_iou, pointing game) and counterfactually verified attribution for every
# method and every beta of the sweep -> reports/grounding/{M}.json (+ example maps .npz).
rule evaluate_grounding:
    input:
        unpack(lambda wc: grounding_store_input(wc.method)),
        code=code("evaluate-grounding"),
        model="models/{method}",
        base=base_model(),
        **image_cache_input(),
        grounding=GROUNDING,
        cf=GROUNDING_CF,
    output:
        json=f"{GROUNDING_DIR}/{{method}}.json",
        maps=f"{GROUNDING_DIR}/{{method}}.npz",
    params:
        file=PARAMS,
        cache=image_cache_arg(),
        embeddings=lambda wc: grounding_store_arg(wc.method),
        cfg=cfg_params(*declared("evaluate-grounding")),
    log:
        f"{LOGS}/evaluate_grounding/{{method}}.log",
    benchmark:
        f"{BENCH}/evaluate_grounding/{{method}}.tsv"
    threads: 1
    resources:
        **gpu_resources(),
    shell:
        "nast evaluate-grounding --params {params.file} --method {wildcards.method} --model-dir {input.model}"
        " --base {input.base}{params.embeddings}{params.cache} --grounding {input.grounding} --cf-dir {input.cf}"
        " --out {output.json} --maps {output.maps} > {log} 2>&1"


rule evaluate_grounding_sweep:
    input:
        code=code("evaluate-grounding"),
        model="models/nast-beta{beta}",
        base=base_model(),
        **grounding_store_input("nast"),
        **image_cache_input(),
        grounding=GROUNDING,
        cf=GROUNDING_CF,
    output:
        json=f"{GROUNDING_DIR}/nast-beta{{beta}}.json",
        maps=f"{GROUNDING_DIR}/nast-beta{{beta}}.npz",
    params:
        file=PARAMS,
        cache=image_cache_arg(),
        embeddings=grounding_store_arg("nast"),
        cfg=cfg_params(*declared("evaluate-grounding")),
    log:
        f"{LOGS}/evaluate_grounding/nast-beta{{beta}}.log",
    benchmark:
        f"{BENCH}/evaluate_grounding/nast-beta{{beta}}.tsv"
    threads: 1
    resources:
        **gpu_resources(),
    shell:
        "nast evaluate-grounding --params {params.file} --method nast-beta{wildcards.beta}"
        " --model-dir {input.model} --base {input.base}{params.embeddings}{params.cache} --grounding {input.grounding} --cf-dir {input.cf}"
        " --out {output.json} --maps {output.maps} > {log} 2>&1"
