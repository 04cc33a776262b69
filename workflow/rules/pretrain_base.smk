# pretrain_base: the tiny open_clip CLIP trained on the demo reports (demo only; elsewhere the
# base model is model.checkpoint from params.yaml, a plain input of trace/train/evaluate).
if DEMO:

    rule pretrain_base:
        input:
            code=code("pretrain-base"),
            cohort=COHORT,
        output:
            directory(BASE_DIR),
        params:
            file=PARAMS,
            cfg=cfg_params(*declared("pretrain-base")),
        log:
            f"{LOGS}/pretrain_base.log",
        benchmark:
            f"{BENCH}/pretrain_base.tsv"
        threads: 2
        resources:
            **gpu_resources(),
        shell:
            "nast pretrain-base --params {params.file} --cohort {input.cohort} --out {output} > {log} 2>&1"
