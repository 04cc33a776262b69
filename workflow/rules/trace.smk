# trace: causal tracing effects (CTE) per text-encoder layer and the layer weights alpha_l.
rule trace:
    input:
        code=code("trace"),
        benchmark=BENCHMARK,
        model=base_model(),
    output:
        cte=f"{CTE_DIR}/cte.parquet",
        layer_weights=report(
            LAYER_WEIGHTS, category="Causal tracing", caption="../report/layer_weights.rst"
        ),
        heatmap=report(
            f"{CTE_DIR}/heatmap.png", category="Causal tracing", caption="../report/heatmap.rst"
        ),
        layers=report(
            f"{CTE_DIR}/layers.png", category="Causal tracing", caption="../report/layers.rst"
        ),
        summary=f"{CTE_DIR}/summary.json",
        quarantine=f"{CTE_DIR}/quarantine.parquet",
    params:
        file=PARAMS,
        cfg=cfg_params(*declared("trace")),
        out=lambda wc, output: os.path.dirname(output.cte),
    log:
        f"{LOGS}/trace.log",
    benchmark:
        f"{BENCH}/trace.tsv"
    threads: 2
    resources:
        **gpu_resources(),
    shell:
        "nast trace --params {params.file} --benchmark {input.benchmark} --base {input.model}"
        " --out {params.out} > {log} 2>&1"
