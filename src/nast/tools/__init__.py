"""The tools of the ``nast`` command that are no stage of the DAG (extract-claims, label, mednega,
dvc-yaml): each a module with ``add_arguments`` and ``run`` over its core."""
