# demo_data: the synthetic dataset in the exact MIMIC-CXR-JPG layout (only when data.source: demo).
if DEMO:

    rule demo_data:
        input:
            code=code("demo-data"),
        output:
            directory(DATA_ROOT),
        params:
            file=PARAMS,
            cfg=cfg_params(*declared("demo-data")),
        log:
            f"{LOGS}/demo_data.log",
        benchmark:
            f"{BENCH}/demo_data.tsv"
        resources:
            **cpu_resources(),
        shell:
            "nast demo-data --params {params.file} --out {output} > {log} 2>&1"
