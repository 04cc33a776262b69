# grounding_data: finding boxes -> counterfactual images (the finding removed: the demo's twins,
# else inpainted) and background controls, one row per (image, finding, box). On the demo the
# boxes file lies inside the demo tree, so the rule depends on the tree; elsewhere on the CSV.
rule grounding_data:
    input:
        code=code("grounding-data"),
        cohort=COHORT,
        boxes=DATA_ROOT if DEMO and config["grounding"]["boxes"] is None else grounding_boxes(),
    output:
        table=GROUNDING,
        cf=directory(GROUNDING_CF),
        quarantine=quarantine("grounding_data"),
        **gate_outputs("grounding"),
    params:
        file=PARAMS,
        cfg=cfg_params(*declared("grounding-data")),
        box_format=config["grounding"]["box_format"],
        boxes=grounding_boxes(),
        root=DATA_ROOT,
        report_dir=VALIDATION,
    log:
        f"{LOGS}/grounding_data.log",
    benchmark:
        f"{BENCH}/grounding_data.tsv"
    resources:
        **cpu_resources(),
    shell:
        "nast grounding-data --params {params.file} --box-format {params.box_format} --boxes {params.boxes}"
        " --root {params.root} --cohort {input.cohort} --cf-dir {output.cf} --out {output.table}"
        " --quarantine {output.quarantine} --report-dir {params.report_dir} > {log} 2>&1"
