# permutations: per study k conditions, options A-D as label vectors, the correct letter.
rule permutations:
    input:
        code=code("permutations"),
        cohort=COHORT,
    output:
        permutations=PERMUTATIONS,
        quarantine=quarantine("permutations"),
        summary=summary_beside(quarantine("permutations")),
        **gate_outputs("permutations"),
    params:
        file=PARAMS,
        report_dir=VALIDATION,
        cfg=cfg_params(*declared("permutations")),
    log:
        f"{LOGS}/permutations.log",
    benchmark:
        f"{BENCH}/permutations.tsv"
    resources:
        **cpu_resources(),
    shell:
        "nast permutations --params {params.file} --cohort {input.cohort}"
        " --out {output.permutations} --quarantine {output.quarantine} --report-dir {params.report_dir} > {log} 2>&1"
