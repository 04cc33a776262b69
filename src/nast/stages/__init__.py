"""The stage layer: one module per Snakemake rule and DVC stage, named like the rule (``nast.stages.train``
for rule ``train``, command ``nast train``). Each declares ``PARAMS_KEYS`` (the params.yaml keys it reads),
``add_arguments(parser)`` and ``run(args, params)``: read the inputs, run the core (in its package), write
the outputs, log to MLflow. No stage module is imported by a core, and no core package imports another
package's stage."""
