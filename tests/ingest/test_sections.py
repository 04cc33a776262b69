"""FINDINGS / IMPRESSION section parsing."""

from __future__ import annotations

import pytest

from nast.ingest.sections import find_headers, parse_sections

STANDARD = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  // eval for infection

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows.

 IMPRESSION:

 No acute cardiopulmonary process.

 NOTIFICATION:  Dr. ___ was paged at 10:40 AM.
"""


def test_standard_report_sections_end_at_next_caps_header():
    findings, impression = parse_sections(STANDARD)
    assert findings == ("There is no focal consolidation, pleural effusion or pneumothorax. "
                        "Bilateral nodular opacities that most likely represent nipple shadows.")
    assert impression == "No acute cardiopulmonary process."  # NOTIFICATION not included


@pytest.mark.parametrize(
    "text,expected",
    [
        (" FINDINGS AND IMPRESSION:  Lungs are clear.\n  No effusion.\n RECOMMENDATION(S):  CT.",
         (None, "Lungs are clear. No effusion.")),
        ("INDICATION: cough\n IMPRESSION:\n\n  No pneumonia.  ", (None, "No pneumonia.")),
        ("FINDINGS: Heart normal.\n", ("Heart normal.", None)),
        ("Findings :  heart size   normal.\nimpression:normal chest", ("heart size normal.", "normal chest")),
        ("  findings  and  impressions :\tclear\n", (None, "clear")),
        ("IMPRESSION: No change. AP: unchanged tube.", (None, "No change. AP: unchanged tube.")),
        ("FINDINGS: a.\nIMPRESSION: b.\nFINDINGS: c.", ("a. c.", "b.")),
        ("INDICATION: fever\nCOMPARISON: none", (None, None)),
        ("FINDINGS:\n\nIMPRESSION: x", (None, "x")),
        ("", (None, None)),
        (None, (None, None)),
    ],
)
def test_variants(text, expected):
    assert parse_sections(text) == expected


def test_headers_found_in_order():
    names = [h[2] for h in find_headers(STANDARD)]
    assert names == ["EXAMINATION", "INDICATION", "TECHNIQUE", "COMPARISON", "FINDINGS", "IMPRESSION", "NOTIFICATION"]
