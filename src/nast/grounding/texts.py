"""The texts of the grounding benchmark and loss: "X" and "no X" for one (image, finding, box).

"X" = one phrasing of the clinical phrase table (``nast/text/data/phrases.csv``, the names the
reports and the MCQ options use), "no X" = one negation cue of
:data:`nast.text.templates.ABSENCE_CUES` ("no", "without", "negative for", ...) + that phrasing,
drawn with a generator seeded by ``seed`` and the pair's identity: the evaluation draws them once
(``grounding.seed``), the grounding loss anew every epoch.
"""

from __future__ import annotations

import random

#: the grounding-table columns the evaluation and the grounding loss read
PAIR_COLUMNS = ("dicom_id", "split", "finding", "box_index", "image_path", "width", "height",
                "x0", "y0", "x1", "y1", "cf_path", "ctrl_path")


def phrasing(dicom_id: str, finding: str, box_index: int, seed: int | str) -> tuple[str, str]:
    """("X", "no X") texts of one pair."""
    from nast.text.templates import ABSENCE_CUES, surface_forms

    rng = random.Random(f"{seed}:{dicom_id}:{finding}:{box_index}")
    name = rng.choice(surface_forms().get(finding, (finding.lower(),)))
    cue = rng.choice(ABSENCE_CUES)
    return name, f"{cue} {name}"
