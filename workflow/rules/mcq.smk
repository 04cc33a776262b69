# mcq: negated option texts + question (template or LLM), each verified by the polarity checker.
rule mcq:
    input:
        code=code("mcq"),
        permutations=PERMUTATIONS,
    output:
        mcq=MCQ,
        quarantine=quarantine("mcq"),
    params:
        file=PARAMS,
        cfg=cfg_params("mcq", "llm"),
    log:
        f"{LOGS}/mcq.log",
    benchmark:
        f"{BENCH}/mcq.tsv"
    resources:
        **cpu_resources(),
    shell:
        "nast mcq --params {params.file} --permutations {input.permutations}"
        " --out {output.mcq} --quarantine {output.quarantine} > {log} 2>&1"
