# contextual: true contextual captions and minimal-edit foils (polarity / laterality / severity).
rule contextual:
    input:
        code=code("contextual"),
        claims=CLAIMS,
        cohort=COHORT,
    output:
        contextual=CONTEXTUAL,
        quarantine=quarantine("contextual"),
    params:
        file=PARAMS,
        cfg=cfg_params("contextual"),
    log:
        f"{LOGS}/contextual.log",
    benchmark:
        f"{BENCH}/contextual.tsv"
    resources:
        **cpu_resources(),
    shell:
        "nast contextual --params {params.file} --claims {input.claims} --cohort {input.cohort}"
        " --out {output.contextual} --quarantine {output.quarantine} > {log} 2>&1"
