# claims: (finding, polarity, location, severity, evidence) mentions from the cohort's reports.
rule claims:
    input:
        code=code("claims"),
        cohort=COHORT,
    output:
        claims=CLAIMS,
        quarantine=quarantine("claims"),
    params:
        file=PARAMS,
        cfg=cfg_params("claims"),
    log:
        f"{LOGS}/claims.log",
    benchmark:
        f"{BENCH}/claims.tsv"
    resources:
        **cpu_resources(),
    shell:
        "nast claims --params {params.file} --cohort {input.cohort} --out {output.claims}"
        " --quarantine {output.quarantine} > {log} 2>&1"
