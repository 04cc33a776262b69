# mcq: negated option texts + question (template or LLM), each verified by the polarity checker.
rule mcq:
    input:
        code=code("mcq"),
        permutations=PERMUTATIONS,
    output:
        mcq=MCQ,
        quarantine=quarantine("mcq"),
        summary=summary_beside(MCQ),
        **gate_outputs("mcq"),
    params:
        file=PARAMS,
        report_dir=VALIDATION,
        cfg=cfg_params(*declared("mcq")),
    log:
        f"{LOGS}/mcq.log",
    benchmark:
        f"{BENCH}/mcq.tsv"
    resources:
        **cpu_resources(),
    shell:
        "nast mcq --params {params.file} --permutations {input.permutations}"
        " --out {output.mcq} --quarantine {output.quarantine} --report-dir {params.report_dir} > {log} 2>&1"
