# affirm: affirmative rewrites of the negated options (verified cue-free) -> the benchmark table.
rule affirm:
    input:
        code=code("affirm"),
        mcq=MCQ,
    output:
        benchmark=BENCHMARK,
        quarantine=quarantine("affirm"),
        summary=summary_beside(BENCHMARK),
        **gate_outputs("benchmark"),
    params:
        file=PARAMS,
        report_dir=VALIDATION,
        cfg=cfg_params(*declared("affirm")),
    log:
        f"{LOGS}/affirm.log",
    benchmark:
        f"{BENCH}/affirm.tsv"
    resources:
        **cpu_resources(),
    shell:
        "nast affirm --params {params.file} --mcq {input.mcq}"
        " --out {output.benchmark} --quarantine {output.quarantine} --report-dir {params.report_dir} > {log} 2>&1"
