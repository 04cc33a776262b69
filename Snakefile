# NAST pipeline: negation-aware selective training for medical CLIP models.
#
#   snakemake --profile workflow/profiles/local      # this machine (2 cores)
#   snakemake --profile slurm                        # SLURM cluster (CPU rules -> cpu partition,
#                                                    # pretrain/trace/train/evaluate(-grounding) -> gpu)
#   snakemake --report reports/report.html           # one HTML page with tables and plots
#
# Every rule calls one `nast <stage>` command with explicit paths; dvc.yaml is generated from this
# DAG by `nast dvc-yaml` (tests/workflow/test_parity.py keeps the two identical). params.yaml is the single
# configuration and is validated here against workflow/schemas/params.schema.yaml.

from snakemake.utils import min_version, validate

min_version("9.0")


report: "workflow/report/workflow.rst"


configfile: "params.yaml"


validate(config, "workflow/schemas/params.schema.yaml")


include: "workflow/rules/common.smk"


wildcard_constraints:
    method="|".join(METHODS),
    beta=r"[0-9]+(\.[0-9]+)?",


include: "workflow/rules/demo_data.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/permutations.smk"
include: "workflow/rules/mcq.smk"
include: "workflow/rules/affirm.smk"
include: "workflow/rules/claims.smk"
include: "workflow/rules/contextual.smk"
include: "workflow/rules/pretrain_base.smk"
include: "workflow/rules/trace.smk"
if CACHE_ON:

    include: "workflow/rules/cache_images.smk"


include: "workflow/rules/embed_images.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"


if GROUNDING_ON:

    include: "workflow/rules/grounding_data.smk"
    include: "workflow/rules/evaluate_grounding.smk"


include: "workflow/rules/report.smk"


localrules:
    all,


rule all:
    input:
        all_targets(),
    default_target: True
