# report: the comparison tables and plots over all evaluated methods and the beta sweep
# (--cte-dir: the CTE heatmap is only logged to MLflow, not an input of the tables).
rule report:
    input:
        code=code("report"),
        evals=expand(f"{EVAL_DIR}/{{method}}.json", method=METHODS + SWEEP),
        # training curves (models/*/curve.csv) for the training_curves plot
        models=expand("models/{method}", method=METHODS + SWEEP),
        # counterfactual grounding: per-method JSON + example maps, the pairs and their images
        **grounding_inputs(),
    output:
        tables=report(
            directory(TABLES_DIR),
            patterns=["{name}.csv"],
            category="Tables",
            caption="../report/tables.rst",
        ),
        plots=report(
            directory(PLOTS_DIR),
            patterns=["{name}.png"],
            category="Plots",
            caption="../report/plots.rst",
        ),
    params:
        file=PARAMS,
        cfg=cfg_params(*declared("report")),
        eval_dir=lambda wc, input: os.path.dirname(input.evals[0]),
        models_dir=lambda wc, input: os.path.dirname(input.models[0]),
        cte_dir=CTE_DIR,
        # only these methods' JSONs and curves: a stale file of a dropped method stays out
        methods=" ".join(METHODS + SWEEP),
        grounding=(
            f" --grounding-dir {GROUNDING_DIR} --grounding-table {GROUNDING}" if GROUNDING_ON else ""
        ),
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCH}/report.tsv"
    resources:
        **cpu_resources(),
    shell:
        "nast report --params {params.file} --eval-dir {params.eval_dir} --methods {params.methods} --out {output.tables}"
        " --plots {output.plots} --models-dir {params.models_dir} --cte-dir {params.cte_dir}"
        "{params.grounding} > {log} 2>&1"
