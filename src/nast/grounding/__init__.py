"""The image side of negation: counterfactual grounding data, metrics and attribution.

``nast grounding-data`` (:mod:`nast.grounding.grounding_data`) builds one row per (image, finding,
box) with the image's counterfactual (the finding removed) and a background control (the same kind
of edit on a same-sized box elsewhere in the lung fields); ``nast evaluate-grounding``
(:mod:`nast.grounding.evaluate_grounding`) scores a method on them. Pure cores:
:mod:`~nast.grounding.boxes` (box CSVs of three layouts), :mod:`~nast.grounding.edits`
(inpainting, twin composites, control placement), :mod:`~nast.grounding.protocol` (maps -> boxes,
IoU / pointing game), :mod:`~nast.grounding.attribution` (Captum attributions and the model's own
patch-text map).
"""
