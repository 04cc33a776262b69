# ingest: MIMIC-CXR-JPG / Open-i / demo tree -> one row per image (+ quarantine).
rule ingest:
    input:
        code=code("ingest"),
        root=dataset_root(),
    output:
        cohort=COHORT,
        quarantine=quarantine("ingest"),
        summary=summary_beside(quarantine("ingest")),
        **gate_outputs("cohort"),
    params:
        file=PARAMS,
        report_dir=VALIDATION,
        cfg=cfg_params(*declared("ingest")),
        source=config["data"]["source"],
    log:
        f"{LOGS}/ingest.log",
    benchmark:
        f"{BENCH}/ingest.tsv"
    resources:
        **cpu_resources(),
    shell:
        "nast ingest --params {params.file} --source {params.source} --root {input.root}"
        " --out {output.cohort} --quarantine {output.quarantine} --report-dir {params.report_dir} > {log} 2>&1"
