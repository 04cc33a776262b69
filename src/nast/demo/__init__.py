"""Embedded demo dataset: synthetic chest radiographs and reports in the MIMIC-CXR-JPG 2.0.0 layout.

``nast demo-data --out DIR`` (:mod:`nast.stages.demo_data`) writes the tree; the Python entry point is
:func:`nast.demo.generate.generate_demo`. The phantom renderer is :mod:`nast.demo.phantom`, label
sampling :mod:`nast.demo.labels`, report text :mod:`nast.demo.reports`.
"""

from nast.demo.generate import generate_demo, plan_demo

__all__ = ["generate_demo", "plan_demo"]
