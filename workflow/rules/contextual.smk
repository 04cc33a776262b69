# contextual: true contextual captions and minimal-edit foils (polarity / laterality / severity).
rule contextual:
    input:
        code=code("contextual"),
        claims=CLAIMS,
        cohort=COHORT,
    output:
        contextual=CONTEXTUAL,
        quarantine=quarantine("contextual"),
        **gate_outputs("contextual"),
    params:
        file=PARAMS,
        report_dir=VALIDATION,
        cfg=cfg_params(*declared("contextual")),
    log:
        f"{LOGS}/contextual.log",
    benchmark:
        f"{BENCH}/contextual.tsv"
    resources:
        **cpu_resources(),
    shell:
        "nast contextual --params {params.file} --claims {input.claims} --cohort {input.cohort}"
        " --out {output.contextual} --quarantine {output.quarantine} --report-dir {params.report_dir} > {log} 2>&1"
