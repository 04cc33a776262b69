# claims: (finding, polarity, location, severity, evidence) mentions from the cohort's reports.
rule claims:
    input:
        code=code("claims"),
        cohort=COHORT,
    output:
        claims=CLAIMS,
        quarantine=quarantine("claims"),
        **gate_outputs("claims"),
    params:
        file=PARAMS,
        report_dir=VALIDATION,
        cfg=cfg_params(*declared("claims")),
    log:
        f"{LOGS}/claims.log",
    benchmark:
        f"{BENCH}/claims.tsv"
    resources:
        **cpu_resources(),
    shell:
        "nast claims --params {params.file} --cohort {input.cohort} --out {output.claims}"
        " --quarantine {output.quarantine} --report-dir {params.report_dir} > {log} 2>&1"
