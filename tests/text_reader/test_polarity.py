"""The polarity checker on the hard cases of real radiology reports (table-driven).

Each table is {topic: [case, ...]}; a case's test id is "topic: the first 40 characters of its sentence".
"""

from __future__ import annotations

import pytest

from nast.conditions import CONDITIONS
from nast.text import polarity
from nast.text.polarity import check, extract_mentions, has_negation_cue


def _params(table: dict[str, list[tuple]]) -> list:
    """One pytest.param per case of a {topic: [case, ...]} table, its id 'topic: sentence start'."""
    return [pytest.param(*case, id=f"{topic}: {case[0][:40]}") for topic, cases in table.items() for case in cases]


# (text, {condition: expected state}) -- states: present | absent | uncertain | None (not mentioned)
CASES = {
    # negation scope across a list
    "negated-list": [
        ("No pleural effusion, consolidation or pneumothorax.",
         {"Pleural Effusion": "absent", "Consolidation": "absent", "Pneumothorax": "absent", "Edema": None}),
        ("There is no focal airspace consolidation, pneumothorax, or large pleural effusion.",
         {"Consolidation": "absent", "Pneumothorax": "absent", "Pleural Effusion": "absent"}),
        ("Lungs are normally inflated without evidence of focal airspace disease, pleural effusion, or pneumothorax.",
         {"Lung Opacity": "absent", "Pleural Effusion": "absent", "Pneumothorax": "absent"}),
    ],
    # a terminator ends the negation scope
    "terminator": [
        ("No pneumothorax or effusion, but there is left basilar atelectasis.",
         {"Pneumothorax": "absent", "Pleural Effusion": "absent", "Atelectasis": "present"}),
        ("No pneumothorax. Mild cardiomegaly.", {"Pneumothorax": "absent", "Cardiomegaly": "present"}),
        ("No pleural fluid, with lung opacity and cardiomegaly noted.",
         {"Pleural Effusion": "absent", "Lung Opacity": "present", "Cardiomegaly": "present"}),
    ],
    # pseudo-negations
    "pseudo-negation": [
        ("No change in the small left pleural effusion.", {"Pleural Effusion": "present"}),
        ("No significant interval change in mild cardiomegaly.", {"Cardiomegaly": "present"}),
        ("Right lower lobe consolidation is not significantly changed.", {"Consolidation": "present"}),
    ],
    # look-alikes
    "look-alike": [
        ("Small pericardial effusion.", {"Pleural Effusion": None}),
        ("Stable calcified granuloma in the right upper lobe.", {"Lung Lesion": None, "Lung Opacity": None}),
        ("Subcutaneous edema of the chest wall.", {"Edema": None}),
    ],
    # affirmative-normal phrases mean absent
    "affirmed-normal": [
        ("Heart size is normal.", {"Cardiomegaly": "absent"}),
        ("The heart is normal in size.", {"Cardiomegaly": "absent"}),
        ("The cardiomediastinal silhouette is within normal limits for size and contour.",
         {"Cardiomegaly": "absent", "Enlarged Cardiomediastinum": "absent"}),
        ("Costophrenic angles are sharp.", {"Pleural Effusion": "absent"}),
        ("The lungs are clear.", {"Lung Opacity": "absent"}),
        ("Lungs are fully expanded.", {"Pneumothorax": "absent"}),
        ("No focal consolidation.", {"Consolidation": "absent"}),
        ("Pulmonary vascularity is within normal limits.", {"Edema": "absent"}),
    ],
    # positives stated without a finding noun
    "no-finding-noun": [
        ("The heart is mildly enlarged.", {"Cardiomegaly": "present"}),
        ("Blunting of the left costophrenic angle.", {"Pleural Effusion": "present"}),
    ],
    # hedges
    "hedge": [
        ("Right basilar opacity may represent atelectasis or pneumonia.",
         {"Lung Opacity": "present", "Atelectasis": "uncertain", "Pneumonia": "uncertain"}),
        ("Question atelectasis versus pneumonia in the left base.",
         {"Atelectasis": "uncertain", "Pneumonia": "uncertain"}),
        ("Pneumonia cannot be excluded.", {"Pneumonia": "uncertain"}),
        ("Cannot exclude a small left pleural effusion.", {"Pleural Effusion": "uncertain"}),
        ("Possible small right pneumothorax.", {"Pneumothorax": "uncertain"}),
        ("Findings suspicious for pulmonary edema.", {"Edema": "uncertain"}),
        ("Likely right lower lobe pneumonia.", {"Pneumonia": "present"}),
        ("Question edema or atypical infection?", {"Edema": "uncertain", "Pneumonia": "uncertain"}),
        ("There may be some chronic indolent infection here.", {"Pneumonia": "uncertain"}),
        ("Other etiologies may include mycoplasma pneumonia.", {"Pneumonia": "uncertain"}),
        ("A pneumonia would be a consideration.", {"Pneumonia": "uncertain"}),
        ("In the appropriate clinical setting this appearance is compatible with pneumonia.",
         {"Pneumonia": "uncertain"}),
        ("Underlying atelectasis is suspected.", {"Atelectasis": "uncertain"}),
        ("Suspicion for small bilateral pleural effusions.", {"Pleural Effusion": "uncertain"}),
    ],
    # Open-i phrasings (issue 17): tuberculous cavity, XXXX blunting, vascularity, an undated fracture
    "open-i-phrasing": [
        ("Right upper lobe cavity, consistent with prior tuberculous infection.", {"Pneumonia": None}),
        ("There is stable left costophrenic XXXX blunting.", {"Pleural Effusion": "present"}),
        ("Stable mild cardiomegaly and increased lung vascularity.", {"Edema": "present", "Cardiomegaly": "present"}),
        ("Several age-indeterminate left-sided rib fractures.", {"Fracture": "present"}),
    ],
    # issue 17: blunting of a lateral/posterior angle, an angle that "remains blunted"; a fractured wire is no fracture
    "blunting-and-wires": [
        ("Blunting of the left posterior costophrenic angle.", {"Pleural Effusion": "present"}),
        ("The right costophrenic angle remains blunted.", {"Pleural Effusion": "present"}),
        ("Fractured median sternotomy wires.", {"Fracture": None}),
    ],
    # issue 17: CheXpert's Edema mentions "heart failure", "chf", "indistinctness"
    "chexpert-edema": [
        ("Findings of mild heart failure.", {"Edema": "present"}),
        ("No CHF.", {"Edema": "absent"}),
        ("Mild pulmonary vascular indistinctness.", {"Edema": "present"}),
    ],
    # issue 17: a line named by its vein, a port by its side; Kerley lines and volume overload are Edema
    "lines-ports-overload": [
        ("Left subclavian line in place.", {"Support Devices": "present"}),
        ("Right-sided port in place.", {"Support Devices": "present"}),
        ("Kerley B lines are present.", {"Edema": "present"}),
        ("Findings of volume overload.", {"Edema": "present"}),
    ],
    # issue 17: a mass-like opacity is a lesion and an opacity; CheXpert's "carcinoma" is a lesion
    "mass-and-carcinoma": [
        ("A rounded mass-like opacity in the right lung.", {"Lung Lesion": "present", "Lung Opacity": "present"}),
        ("Right upper lobe carcinoma.", {"Lung Lesion": "present"}),
    ],
    # issue 17: "no X seen," ends the negation's scope; "lungs are clear airspace disease" (a dropped "of")
    "scope-end-and-dropped-of": [
        ("No consolidation, no effusion seen, small calcified nodule in the right lung.",
         {"Consolidation": "absent", "Pleural Effusion": "absent", "Lung Lesion": "present"}),
        ("Lungs are well expanded and clear focal airspace disease.", {"Lung Opacity": "absent"}),
    ],
    # issue 17: Open-i's XXXX hides the device word; its tip or a cardiac generator still names it
    "xxxx-device": [
        ("The right chest XXXX is seen with its tip in the low SVC.", {"Support Devices": "present"}),
        ("Dual-XXXX cardiac XXXX in stable position.", {"Support Devices": "present"}),
        ("Vague opacity near the scapular tip.", {"Support Devices": None}),
        ("Visualized XXXX of the chest XXXX are within normal limits.", {"Support Devices": None}),
        ("There is an IVC XXXX identified.", {"Support Devices": "present"}),
    ],
    # a density over the heart or ribs is no lung opacity; one in a lobe is, and its clearing is absence
    "density": [
        ("Curvilinear densities over the heart, coronary artery stents.", {"Lung Opacity": None}),
        ("Nodular densities projecting over right anterior fifth and sixth ribs.", {"Lung Opacity": None}),
        ("Patchy density in the right lower lobe.", {"Lung Opacity": "present"}),
        ("There has been clearing of left base airspace opacities.", {"Lung Opacity": "absent"}),
    ],
    # issue 17: Open-i's XXXX hides the device word; its tip or a cardiac generator still names it
    "placeholder": [
        ("No evidence of pleural effusion.. Left basilar atelectasis noted.",
         {"Pleural Effusion": "absent", "Atelectasis": "present"}),
        ("Heart size normal. XXXX XXXX are intact. No XXXX focal airspace consolidation or pleural effusion.",
         {"Cardiomegaly": "absent", "Consolidation": "absent", "Pleural Effusion": "absent"}),
        ("___ was notified. Small right pleural effusion. No pneumothorax.",
         {"Pleural Effusion": "present", "Pneumothorax": "absent"}),
        ("opacities in the left lung apex.There is no pneumothorax.",
         {"Lung Opacity": "present", "Pneumothorax": "absent"}),
    ],
    # resolution and removal are absence
    "resolved": [
        ("Interval resolution of the right pneumothorax.", {"Pneumothorax": "absent"}),
        ("The left pleural effusion has resolved.", {"Pleural Effusion": "absent"}),
    ],
    # synonyms
    "synonym": [
        ("Small right PTX.", {"Pneumothorax": "present"}),
        ("Pulmonary vascular congestion.", {"Edema": "present"}),
        ("Enlarged cardiac silhouette.", {"Cardiomegaly": "present"}),
        ("Right IJ central line tip in the SVC. ET tube and NG tube in place.", {"Support Devices": "present"}),
        ("Healed left rib fractures.", {"Fracture": "present"}),
        ("Patchy airspace disease in the right lower lobe.", {"Lung Opacity": "present"}),
        ("Left apical pleural thickening.", {"Pleural Other": "present"}),
        ("A 1 cm nodule in the left upper lobe.", {"Lung Lesion": "present"}),
    ],
    # a conflict resolves the CheXpert way: present beats absent
    "conflict": [
        ("No new pleural effusion. Small left pleural effusion is unchanged.", {"Pleural Effusion": "present"}),
    ],
}


@pytest.mark.parametrize("text,expected", _params(CASES))
def test_check(nlp, text, expected):
    got = check(text, list(expected))
    assert got == expected


def test_check_returns_every_requested_condition(nlp):
    result = check("Mild cardiomegaly.", list(CONDITIONS))
    assert set(result) == set(CONDITIONS)
    assert [c for c, s in result.items() if s is not None] == ["Cardiomegaly"]


def test_check_rejects_unknown_condition(nlp):
    with pytest.raises(ValueError, match="Heart Attack"):
        check("text", ["Heart Attack"])


def test_empty_text_mentions_nothing(nlp):
    assert check("", ["Edema"]) == {"Edema": None}
    assert extract_mentions(None) == []


@pytest.mark.parametrize(
    "text,finding,location,severity",
    [
        ("Small left pleural effusion.", "Pleural Effusion", "left", "small"),
        ("Moderate bilateral pleural effusions.", "Pleural Effusion", "bilateral", "moderate"),
        ("Mild bibasilar atelectasis.", "Atelectasis", "bilateral basilar", "mild"),
        ("Right upper lobe consolidation.", "Consolidation", "right upper", None),
        ("Consolidation in the left lower lobe.", "Consolidation", "left lower", None),
        ("Trace right-sided effusion.", "Pleural Effusion", "right", "small"),
        ("Massive cardiomegaly.", "Cardiomegaly", None, "large"),
        ("The heart is markedly enlarged.", "Cardiomegaly", None, "severe"),
        ("Borderline cardiomegaly.", "Cardiomegaly", None, "borderline"),
        ("Retrocardiac opacity.", "Lung Opacity", "retrocardiac", None),
        ("Tiny left apical pneumothorax.", "Pneumothorax", "left apical", "small"),
    ],
)
def test_location_and_severity_are_normalised(nlp, text, finding, location, severity):
    mentions = [m for m in extract_mentions(text) if m.finding == finding]
    assert len(mentions) == 1
    assert (mentions[0].location, mentions[0].severity) == (location, severity)


# a side word reaches the findings linked to it (expected: {finding: the side of its every mention})
SIDE_CASES = {
    # coordination: one side word for a list of findings
    "coordination": [
        ("Left lower lobe atelectasis infiltrate and effusion.",
         {"Atelectasis": "left", "Lung Opacity": "left", "Pleural Effusion": "left"}),
        ("Bibasilar atelectasis and small effusions.", {"Atelectasis": "bilateral", "Pleural Effusion": "bilateral"}),
    ],
    # "X consistent with / compatible with Y", "X may represent Y"
    "consistent-with": [
        ("Blunting of the right costophrenic angle, consistent with a small effusion.", {"Pleural Effusion": "right"}),
        ("Left basilar opacity compatible with some effusion.", {"Lung Opacity": "left", "Pleural Effusion": "left"}),
        ("Right lower lobe opacity may represent atelectasis.", {"Lung Opacity": "right", "Atelectasis": "right"}),
    ],
    # Open-i's XXXX placeholder and a few words in between do not stop it; a negation does
    "xxxx-and-gap": [
        ("XXXX opacities in the left lung base, XXXX atelectasis.", {"Lung Opacity": "left", "Atelectasis": "left"}),
        ("Stable opacity in the left base, likely scarring or atelectasis.", {"Atelectasis": "left"}),
        ("Left basilar opacity without atelectasis.", {"Atelectasis": None}),
        ("Left basilar opacity, but right atelectasis.", {"Atelectasis": "right"}),
    ],
    # plural pleural findings and "lung bases" are bilateral
    "plural-bilateral": [
        ("Small pleural effusions.", {"Pleural Effusion": "bilateral"}),
        ("Atelectasis in the lung bases.", {"Atelectasis": "bilateral"}),
    ],
    # a side word of its own wins; a finding without a side takes none
    "own-side-wins": [
        ("Right upper lobe opacity and small left effusion.", {"Lung Opacity": "right", "Pleural Effusion": "left"}),
        ("Left pleural effusion and cardiomegaly.", {"Pleural Effusion": "left", "Cardiomegaly": None}),
    ],
    # a sentence break or other words between the two mentions stop it
    "break-stops": [
        ("Left lower lobe atelectasis. Small effusion.", {"Atelectasis": "left", "Pleural Effusion": None}),
        ("Left lower lobe atelectasis, the heart is normal, small effusion.", {"Pleural Effusion": None}),
        ("Left effusion, stable calcified granuloma and nodule.", {"Pleural Effusion": "left", "Lung Lesion": None}),
    ],
    # issue 17: a side word ConText cannot attach (a coordination or "there is" in between)
    "unattached-side": [
        ("Chronic right upper lobe scarring and atelectasis.", {"Atelectasis": "right"}),
        ("In the right lower lobe there is airspace disease compatible with pneumonia.",
         {"Lung Opacity": "right", "Pneumonia": "right"}),
        ("Bilateral rib deformities compatible with healed fractures.", {"Fracture": "bilateral"}),
    ],
    # ... a location phrase after the finding, also back along a coordination
    "location-after": [
        ("Minimal atelectasis or scarring in the right lung base.", {"Atelectasis": "right"}),
        ("Healed fracture, left mid clavicle.", {"Fracture": "left"}),
        ("Old rib fractures and pleural thickening are seen on the left.",
         {"Fracture": "left", "Pleural Other": "left"}),
        ("Streaky atelectasis / airspace disease within the left lung base.",
         {"Atelectasis": "left", "Lung Opacity": "left"}),
    ],
    # ... but not the side word of a later finding
    "not-later-side": [
        ("Effusion, left lower lobe consolidation.", {"Pleural Effusion": None, "Consolidation": "left"}),
    ],
    # "lung bases" after the finding, and "basilar" with no side word anywhere in the sentence, are both sides
    "bases-basilar": [
        ("Minimal atelectasis or scarring in the lung bases.", {"Atelectasis": "bilateral"}),
        ("Mild basilar atelectasis.", {"Atelectasis": "bilateral"}),
        ("Mild basilar atelectasis, more on the left.", {"Atelectasis": "left"}),
    ],
    # "right greater than left" is both sides
    "greater-than": [
        ("Right greater than left basilar opacities.", {"Lung Opacity": "bilateral"}),
    ],
}


@pytest.mark.parametrize("text,expected", _params(SIDE_CASES))
def test_a_side_travels_along_a_link(nlp, text, expected):
    sides = {}
    for m in extract_mentions(text):
        sides.setdefault(m.finding, set()).add((m.location or "").split(" ")[0] or None)
    assert {f: sides[f] for f in expected} == {f: {v} for f, v in expected.items()}

# (text, finding, the set of its polarities in the text, or the one polarity)
POLARITY_CASES = {
    # a hedge on the finding makes it uncertain
    "hedged": [
        ("Blunting of the right costophrenic sulcus could be secondary to a small effusion versus scarring.",
         "Pleural Effusion", "uncertain"),
        ("Vascular congestion, suspicious for early edema.", "Edema", "uncertain"),
        ("Left effusion, possibly also a small right effusion.", "Pleural Effusion", "uncertain"),
    ],
    # a seen opacity is present whatever it may represent
    "seen-opacity": [
        ("Small right juxtahilar opacity may represent infiltrate.", "Lung Opacity", "positive"),
    ],
    # ... and so is a seen nodule or mass (issue 17)
    "seen-lesion": [
        ("Right upper lobe nodule which may represent a metastasis.", "Lung Lesion", "positive"),
    ],
    # a hedged-row word ("infectious") follows a named positive pneumonia beside it, and a hedge wins over both
    "hedged-row": [
        ("Right lower lobe pneumonia, an infectious process.", "Pneumonia", "positive"),
        ("Possible pneumonia, an infectious process.", "Pneumonia", "uncertain"),
        ("Opacities most consistent with an infectious process.", "Pneumonia", "uncertain"),
    ],
    # the rule is per sentence
    "per-sentence": [
        ("Small left effusion. Possible right effusion.", "Pleural Effusion", {"positive", "uncertain"}),
    ],
}


@pytest.mark.parametrize("text,finding,polarity", _params(POLARITY_CASES))
def test_one_polarity_per_finding_and_sentence(nlp, text, finding, polarity):
    got = {m.polarity for m in extract_mentions(text) if m.finding == finding}
    assert got == (polarity if isinstance(polarity, set) else {polarity})


@pytest.mark.parametrize("finding,location,severity", [
    pytest.param("Lung Opacity", "right upper", None, id="opacity"),
    pytest.param("Pleural Effusion", "left", "small", id="effusion"),
])
def test_modifiers_attach_to_the_nearest_finding(nlp, finding, location, severity):
    ms = {m.finding: m for m in extract_mentions("Right upper lobe opacity and small left pleural effusion.")}
    assert (ms[finding].location, ms[finding].severity) == (location, severity)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("There is no pleural effusion.", True),
        ("Lungs without consolidation.", True),
        ("Negative for pneumothorax.", True),
        ("Effusion is not seen.", True),
        ("Pleural effusion is absent.", True),
        ("Small left pleural effusion.", False),
        ("The heart size is normal and the lungs are clear.", False),
        ("Pleural effusion is present on the left.", False),
    ],
)
def test_has_negation_cue(nlp, text, expected):
    assert has_negation_cue(text) is expected


def test_lexicon_is_data_and_loads_into_medspacy(nlp):
    assert {"no", "without", "negative for", "free of"} <= set(polarity.NEGATION_CUES)
    assert "no change" not in polarity.NEGATION_CUES  # pseudo-negation is not a cue
    findings = {f for row in polarity.target_rows() for f in row["finding"].split("|")}
    assert findings - {polarity.LOOKALIKE} == set(CONDITIONS)
    context = nlp.get_pipe("medspacy_context")
    assert len(context.rules) == len(polarity.modifier_rows())
    assert len(nlp.get_pipe("medspacy_target_matcher").rules) == len(polarity.target_rows())


# Issue 17, round 2: surface forms of CheXpert's mention lists (chexpert-labeler phrases/mention/*.txt,
# e.g. edema.txt "indistinctness", "vascular prominence"; lung_lesion.txt "lesion" forms;
# support_devices.txt "line", "drain", "device") and their common clinical variants that the lexicon
# missed. Each sentence is written for this test; a look-alike row keeps its finding word out.
VOCABULARY_CASES = {
    # Edema
    "edema": [
        ("There is mild pulmonary oedema.", {"Edema": "present"}),
        ("Perihilar indistinctness, new since the prior study.", {"Edema": "present"}),
        ("There is indistinctness of the pulmonary vessels.", {"Edema": "present"}),
        ("The hila are indistinct.", {"Edema": "present"}),
        ("Indistinct hila bilaterally.", {"Edema": "present"}),
        ("Engorged pulmonary vessels.", {"Edema": "present"}),
        ("The pulmonary vessels are engorged.", {"Edema": "present"}),
        ("Pulmonary vasculature is congested.", {"Edema": "present"}),
        ("The pulmonary vasculature is prominent.", {"Edema": "present"}),
        ("Prominent pulmonary vasculature.", {"Edema": "present"}),
        ("Upper lobe vascular redistribution.", {"Edema": "present"}),
        ("The pulmonary vascularity is cephalized.", {"Edema": "present"}),
        ("Pulmonary vascular markings are increased.", {"Edema": "present"}),
        ("Findings are consistent with congestive cardiac failure.", {"Edema": "present"}),
        ("No evidence of cardiac failure.", {"Edema": "absent"}),
        ("No hilar indistinctness.", {"Edema": "absent"}),
        ("No vascular redistribution.", {"Edema": "absent"}),
        ("Edematous lungs.", {"Edema": "present"}),
        ("Batwing opacities.", {"Edema": "present", "Lung Opacity": "present"}),
        ("The pulmonary vessels are not engorged.", {"Edema": None}),
        ("The hila are normal.", {"Edema": None}),
        ("Prominent left hilum, possibly adenopathy.", {"Edema": None}),
        ("Subcutaneous oedema of the lateral chest wall.", {"Edema": None}),
    ],
    # Lung Lesion
    "lung-lesion": [
        ("There is a coin lesion in the right midlung.", {"Lung Lesion": "present"}),
        ("Several small nodular lesions in the right lung.", {"Lung Lesion": "present"}),
        ("Spiculated lesion in the left upper lobe.", {"Lung Lesion": "present"}),
        ("No focal parenchymal lesion.", {"Lung Lesion": "absent"}),
        ("Goiter with mass effect on the trachea.", {"Lung Lesion": None}),
        ("Right upper lobe mass with mass effect on the trachea.", {"Lung Lesion": "present"}),
    ],
    # MeSH has no reticulonodular term and encodes such changes as nodules (Open-i's manual coding)
    "reticulonodular": [
        ("Reticulonodular changes at the left base.", {"Lung Lesion": "present"}),
        ("Bilateral apical fibronodular scarring.", {"Lung Lesion": "present"}),
        ("Diffuse micronodular opacities.", {"Lung Lesion": "present", "Lung Opacity": "present"}),
        ("Nodular irregularities in the right upper lobe.", {"Lung Lesion": "present"}),
        ("No reticulonodular opacities.", {"Lung Lesion": "absent", "Lung Opacity": "absent"}),
    ],
    # Pleural Effusion
    "pleural-effusion": [
        ("There is a small amount of fluid in the right minor fissure.", {"Pleural Effusion": "present"}),
        ("Fluid tracking into the major fissure.", {"Pleural Effusion": "present"}),
        ("Small subpulmonic effusion on the right.", {"Pleural Effusion": "present"}),
        ("Meniscus of fluid at the left base.", {"Pleural Effusion": "present"}),
        ("Loculated pleural fluid laterally on the left.", {"Pleural Effusion": "present"}),
        ("No fluid in the fissures.", {"Pleural Effusion": "absent"}),
        ("Small amount of fluid in the left costophrenic angle.", {"Pleural Effusion": "present"}),
        ("Right basilar blunting.", {"Pleural Effusion": "present"}),
        ("Blunting of the right lateral sulcus.", {"Pleural Effusion": "present"}),
        ("The posterior sulci are mildly blunted.", {"Pleural Effusion": "present"}),
        ("The lateral sulci are sharp.", {"Pleural Effusion": None}),
    ],
    # Fracture: the same word on a device or its fixation is a look-alike
    "fracture": [
        ("Broken left 5th and 6th ribs.", {"Fracture": "present"}),
        ("Broken sternotomy wire.", {"Fracture": None}),
        ("There is a fracture of the pacer lead.", {"Fracture": None, "Support Devices": "present"}),
        ("Fracture of the third sternal wire.", {"Fracture": None}),
        ("The fracture fixation plate is intact.", {"Fracture": None}),
        ("Fracture of the left seventh rib.", {"Fracture": "present"}),
    ],
    # Support Devices
    "support-devices": [
        ("The line terminates in the SVC.", {"Support Devices": "present"}),
        ("Left ventricular assist device.", {"Support Devices": "present"}),
        ("There is a loop recorder over the left chest.", {"Support Devices": "present"}),
        ("Gastrostomy tube in the left upper quadrant.", {"Support Devices": "present"}),
        ("Transvenous pacing wire in the right ventricle.", {"Support Devices": "present"}),
        ("Epicardial pacing wires.", {"Support Devices": "present"}),
        ("Right IJ sheath.", {"Support Devices": "present"}),
        ("Left IJ introducer sheath.", {"Support Devices": "present"}),
        ("Left-sided pacing device.", {"Support Devices": "present"}),
        ("Right-sided central venous line.", {"Support Devices": "present"}),
        ("Left pleural drain in place.", {"Support Devices": "present"}),
        ("The tube terminates in the stomach.", {"Support Devices": "present"}),
        ("Mechanical mitral valve.", {"Support Devices": "present"}),
        ("Bioprosthetic aortic valve.", {"Support Devices": "present"}),
        ("Mitral annuloplasty ring.", {"Support Devices": "present"}),
        ("Status post TAVR.", {"Support Devices": "present"}),
        ("Left IJ Cordis.", {"Support Devices": "present"}),
        ("Aortic valve calcification.", {"Support Devices": None}),
        ("The pleural line is visible at the right apex.", {"Support Devices": None}),
        ("Skin fold line projects over the right lung.", {"Support Devices": None}),
        ("The central venous structures are normal.", {"Support Devices": None}),
    ],
}


@pytest.mark.parametrize("text,expected", _params(VOCABULARY_CASES))
def test_chexpert_vocabulary(nlp, text, expected):
    assert check(text, list(expected)) == expected


@pytest.mark.parametrize("source,text", [
    (r"\b(?:engorged|congested) (?:pulmonary )?vessels\b", "Engorged vessels; congested pulmonary vessels."),
    (r"(?:\band\b|\bor\b|\bwith\b|,)", "effusion, atelectasis and edema or with"),
    (r"\b(?<!scapular )tips? (?:is |at )", "The scapular tip is high; the catheter tip is at the SVC."),
    (r"\b(?:(?:left|right) )?(?:costophrenic|cp) angles?", "Right costophrenic angle, CP angles, left cp angle"),
], ids=["vessels", "conjunctions", "tip-lookbehind", "costophrenic"])
def test_first_char_guard_keeps_every_match(source, text):
    import re

    plain = re.compile(source, re.I)
    guarded = polarity.first_char_guard(plain)
    assert guarded.pattern.startswith("(?=[")
    assert [m.span() for m in guarded.finditer(text)] == [m.span() for m in plain.finditer(text)]
    assert guarded.findall(text)


# left alone where the first characters cannot be listed (\w, \s, \d are Unicode-wide) or it can be empty
@pytest.mark.parametrize("source", [r"\b(?:\w+ )?effusion", r"\s*,\s*with", r"\b\d+ mm", r"(?:a)?"],
                         ids=["word-class", "space-class", "digit-class", "can-be-empty"])
def test_first_char_guard_leaves_unlistable_patterns_alone(source):
    import re

    assert polarity.first_char_guard(re.compile(source, re.I)).pattern == source


def test_matchers_use_guarded_patterns(nlp):
    regex = nlp.get_pipe("medspacy_target_matcher")._TargetMatcher__matcher._MedspacyMatcher__regex_matcher
    patterns = [p.pattern for ps in regex._patterns.values() for p in ps]
    assert sum(p.startswith("(?=[") for p in patterns) > len(patterns) / 2


# Issue 17, round 3: hedges and scope ends that CheXpert's patterns have and the reader lacked
# (chexpert-labeler patterns/post_negation_uncertainty.txt: "worrisome for", "favor", "less
# likely", "may"), an absence stated after the finding ("is no longer seen"), a negated list that
# ends where a new finding starts with its size ("no pneumothorax, small left effusion"), and a
# heart size that CheXpert's cardiomegaly.txt ("heart size", "cardiac silhouette") reads as a
# positive mention. Each sentence is written for this test: positive, negated, look-alike.
ROUND3_CASES = {
    # "worrisome for" is a hedge, as "concerning for" already was
    "worrisome": [
        ("Right lower lobe consolidation worrisome for pneumonia.",
         {"Consolidation": "present", "Pneumonia": "uncertain"}),
        ("No findings worrisome for pneumonia.", {"Pneumonia": "absent"}),
        ("Right lower lobe pneumonia, worrisome given the history.", {"Pneumonia": "present"}),
    ],
    # "favor(ed) (as / to represent)" X is a hedge on X
    "favor": [
        ("Left base opacity, favor atelectasis.", {"Atelectasis": "uncertain", "Lung Opacity": "present"}),
        ("Lingular opacity favored as atelectasis.", {"Atelectasis": "uncertain", "Lung Opacity": "present"}),
        ("Lingular opacity is favored to represent atelectasis.", {"Atelectasis": "uncertain"}),
        ("No atelectasis is favored over effusion.", {"Atelectasis": "absent"}),
        ("The line is in favorable position. Left basilar atelectasis.", {"Atelectasis": "present"}),
    ],
    # the less likely alternative is uncertain; the favoured one is kept
    "less-likely": [
        ("Left base opacity, atelectasis more likely than pneumonia.",
         {"Atelectasis": "present", "Pneumonia": "uncertain", "Lung Opacity": "present"}),
        ("Left base atelectasis favored over pneumonia.", {"Atelectasis": "present", "Pneumonia": "uncertain"}),
        ("Pneumonia is less likely.", {"Pneumonia": "uncertain"}),
        ("Less likely pneumonia.", {"Pneumonia": "uncertain"}),
        ("No pneumonia. Atelectasis is likely.", {"Pneumonia": "absent", "Atelectasis": "present"}),
    ],
    # a bare may/might before the finding (Open-i's typo'd "may healing rib fracture")
    "may": [
        ("May healing rib fracture.", {"Fracture": "uncertain"}),
        ("There might be a small left effusion.", {"Pleural Effusion": "uncertain"}),
        ("Small left effusion, which may be loculated.", {"Pleural Effusion": "present"}),
        ("No fracture, may be positional.", {"Fracture": "absent"}),
    ],
    # an absence stated after the finding
    "absence-after": [
        ("The previously seen left effusion is no longer visualized.", {"Pleural Effusion": "absent"}),
        ("The left effusion is no longer seen, but a small right effusion remains.", {"Pleural Effusion": "present"}),
        ("The left effusion is no larger.", {"Pleural Effusion": "present"}),
    ],
    # a negated list ends where a new finding starts with its size or age after a comma
    "list-end-size": [
        ("No pneumothorax, small left pleural effusion.", {"Pneumothorax": "absent", "Pleural Effusion": "present"}),
        ("Negative for pneumothorax, moderate right effusion.",
         {"Pneumothorax": "absent", "Pleural Effusion": "present"}),
        ("No acute bony abnormality, healed right rib fractures.", {"Fracture": "present"}),
        ("No pneumothorax, mild cardiomegaly.", {"Pneumothorax": "absent", "Cardiomegaly": "present"}),
        ("No focal consolidation, large pleural effusion, or pneumothorax.",
         {"Consolidation": "absent", "Pleural Effusion": "absent", "Pneumothorax": "absent"}),
        ("No pneumothorax, effusion, or small nodule.", {"Pneumothorax": "absent", "Pleural Effusion": "absent"}),
    ],
    # an increased heart size is Cardiomegaly (CheXpert: "heart size", "cardiac silhouette" mentions)
    "heart-size": [
        ("Marked increase in heart size.", {"Cardiomegaly": "present"}),
        ("Moderate increase in size of the cardiac silhouette.", {"Cardiomegaly": "present"}),
        ("Increased heart size since the prior study.", {"Cardiomegaly": "present"}),
        ("Prominent cardiac silhouette.", {"Cardiomegaly": "present"}),
        ("No increase in heart size.", {"Cardiomegaly": None}),
        ("Without interval increase in heart size.", {"Cardiomegaly": None}),
        ("Increased density in the left lower lobe.", {"Cardiomegaly": None, "Lung Opacity": "present"}),
    ],
    # a lesion named by its lobe is a lung lesion; a bone or skin lesion is not
    "lobe-lesion": [
        ("Left upper lobe lesion.", {"Lung Lesion": "present"}),
        ("Right hilar mass lesion.", {"Lung Lesion": "present"}),
        ("No right upper lobe lesion.", {"Lung Lesion": "absent"}),
        ("Lytic lesion in the right humerus.", {"Lung Lesion": None}),
        ("Skin lesion over the left chest.", {"Lung Lesion": None}),
    ],
    # fluid in the pleural space is an effusion (CheXpert: "pleural fluid"); clear pleural spaces deny it
    "pleural-space": [
        ("Small amount of fluid in the right pleural space.", {"Pleural Effusion": "present"}),
        ("No fluid in the pleural space.", {"Pleural Effusion": "absent"}),
        ("The pleural spaces are clear.", {"Pleural Effusion": "absent"}),
        ("The lungs and pleural spaces show no acute abnormality.", {"Pleural Effusion": None}),
    ],
    # a pacing lead named by its chamber is a device (CheXpert support_devices.txt: "lead")
    "lead": [
        ("Right ventricular lead in good position.", {"Support Devices": "present"}),
        ("Coronary sinus lead.", {"Support Devices": "present"}),
        ("No pacer leads.", {"Support Devices": "absent"}),
        ("Lead poisoning in the history.", {"Support Devices": None}),
    ],
    # a collapsed lobe is Atelectasis (CheXpert atelectasis.txt: "collapse"); a collapsed vertebra is not
    "collapse": [
        ("In the collapsed left upper lobe are stranding and pneumatoceles.", {"Atelectasis": "present"}),
        ("The right middle lobe is collapsed.", {"Atelectasis": "present"}),
        ("No collapsed lobe.", {"Atelectasis": "absent"}),
        ("Collapsed vertebral body at T12.", {"Atelectasis": None}),
    ],
    # a thickened fissure is pleural thickening (Pleural Other), as "fissural thickening" already was
    "fissure": [
        ("There is thickening of the fissure.", {"Pleural Other": "present"}),
        ("Thickened minor fissure.", {"Pleural Other": "present"}),
        ("No thickening of the fissures.", {"Pleural Other": "absent"}),
        ("The minor fissure is visible.", {"Pleural Other": None}),
    ],
    # an unknown age, acuity or cause leaves the finding present (as "age-indeterminate" already did)
    "unknown-age": [
        ("There is a fracture of the left 7th rib, of uncertain acuity.", {"Fracture": "present"}),
        ("Nodule of uncertain significance in the left upper lobe.", {"Lung Lesion": "present"}),
        ("Age indeterminant rib fracture.", {"Fracture": "present"}),
        ("Possible rib fracture of uncertain acuity.", {"Fracture": "uncertain"}),
    ],
    # "unclear whether there is" hedges past the "there is" that otherwise ends a cue's scope
    "unclear-whether": [
        ("Uncertain whether there is a small effusion.", {"Pleural Effusion": "uncertain"}),
        ("It is unclear if there is a small left effusion.", {"Pleural Effusion": "uncertain"}),
        ("Small left effusion. It is unclear whether there has been interval change.", {"Pleural Effusion": "present"}),
    ],
    # CheXpert pneumonia.txt: "infectious"; a prior granulomatous infectious disease stays a look-alike.
    # Round 4: an infection that is not named pneumonia is an uncertain Pneumonia at most (ROUND4_CASES)
    "infectious": [
        ("Right lower lobe opacity, likely infectious.", {"Pneumonia": "uncertain", "Lung Opacity": "present"}),
        ("Differential includes infectious and inflammatory etiologies.", {"Pneumonia": "uncertain"}),
        ("No definite infectious infiltrate is seen.", {"Pneumonia": "absent"}),
        ("Sequela of prior granulomatous infectious disease.", {"Pneumonia": None}),
        ("Noninfectious inflammation.", {"Pneumonia": None}),
    ],
    # Open-i's XXXX after a sided chest (wall) is the device there (its catheter tip is not always named)
    "chest-xxxx": [
        ("Left chest XXXX in stable position.", {"Support Devices": "present"}),
        ("Left-sided medication injection XXXX has its tip at the cavoatrial junction.",
         {"Support Devices": "present"}),
        ("The right chest wall XXXX has been removed.", {"Support Devices": "absent"}),
        ("No chest XXXX XXXX.", {"Support Devices": None}),
        ("Lucencies throughout the chest XXXX representing emphysema.", {"Support Devices": None}),
    ],
}


@pytest.mark.parametrize("text,expected", _params(ROUND3_CASES))
def test_round3_hedges_scopes_and_vocabulary(nlp, text, expected):
    assert check(text, list(expected)) == expected


ROUND3_PATTERNS = {
    # "worrisome for", "favor(ed)", "more/less likely", "may/might" are alternatives of the "possible" row
    "modifiers": ("possible", "is less likely", "is no longer seen", ", small", "and", "of uncertain acuity",
                  "unclear whether there is"),
    # the lobe lesion, pleural-space fluid, chamber leads and injection port are alternatives of older rows
    "targets": ("increased heart size", "coin lesion", "fissural fluid", "pleural spaces are clear", "generator",
                "portacath", "collapsed lobe", "thickening of the fissure", "left chest XXXX"),
}


ROUND4_PATTERNS = {
    "modifiers": ("possible", "and", "bilateral", "upper lobes", "lower lobes", "mid lungs", "not definitely seen"),
    "targets": ("shunt tubing", "enlarged cardiomediastinal silhouette", "mediastinum enlarged"),
}


@pytest.mark.parametrize("kind,literal", [(kind, literal) for rows in (ROUND3_PATTERNS, ROUND4_PATTERNS)
                                          for kind, literals in rows.items() for literal in literals])
def test_round3_and_round4_patterns_are_guarded(kind, literal):
    import re

    rows = {"modifiers": polarity.modifier_rows, "targets": polarity.target_rows}[kind]()
    (row,) = [r for r in rows if r["literal"] == literal and r["pattern"]]
    assert polarity.first_char_guard(re.compile(row["pattern"], re.I)).pattern.startswith("(?=["), literal


# Issue 17, round 4 (tune half + held-out quarter A, docs/RESULTS.md "round 4")
ROUND4_CASES = {
    # a bare "A versus B" names the alternatives for what is seen: MeSH codes each as present (20 of the 21
    # tune + held-out A reports with one); CheXpert's conj:versus would make both uncertain. Another hedge
    # in the sentence still makes them uncertain, and the side reaches both alternatives
    "versus": [
        ("Bibasilar atelectasis versus scarring.", {"Atelectasis": "present"}),
        ("Streaky right lower lobe infiltrate versus atelectasis.",
         {"Lung Opacity": "present", "Atelectasis": "present"}),
        ("Left lower lobe atelectasis versus infiltrate.", {"Atelectasis": "present", "Lung Opacity": "present"}),
        ("Small left pleural effusion vs. pleural thickening.",
         {"Pleural Effusion": "present", "Pleural Other": "present"}),
        ("Question left basilar atelectasis versus infiltrate.", {"Atelectasis": "uncertain"}),
        ("Right lower lobe opacity may represent focal infiltrate versus atelectasis.", {"Atelectasis": "uncertain"}),
        ("Blunting of the right costophrenic sulcus could be secondary to a small effusion versus scarring.",
         {"Pleural Effusion": "uncertain"}),
        ("No effusion versus prior study.", {"Pleural Effusion": "absent"}),
    ],
    # a differential diagnosis lists possibilities (CheXpert: "differential diagnosis includes")
    "differential": [
        ("Abnormal interstitial pattern with a differential diagnosis including chronic lung disease and "
         "atypical pulmonary edema.", {"Edema": "uncertain"}),
        ("Differential considerations include interstitial edema.", {"Edema": "uncertain"}),
        ("Mild pulmonary edema.", {"Edema": "present"}),
    ],
    # what comes after "rather than" (Open-i masks the word: "XXXX than") is not read as present
    "than": [
        ("This most likely represents degenerative spurring XXXX than metastasis.", {"Lung Lesion": "uncertain"}),
        ("Right paratracheal stripe is denser XXXX than normal.", {"Lung Lesion": None}),
    ],
    # MeSH codes an enlarged cardiomediastinal silhouette as an enlarged cardiac shadow (6 of 6 on tune + A),
    # as a normal one already denied both
    "cardiomediastinal": [
        ("Stable enlarged cardiomediastinal silhouette.",
         {"Cardiomegaly": "present", "Enlarged Cardiomediastinum": "present"}),
        ("The cardiomediastinal silhouette is significantly enlarged.", {"Cardiomegaly": "present"}),
        ("Stable, nonenlarged cardiomediastinal silhouette.", {"Cardiomegaly": None}),
        ("Non-enlarged cardiomediastinal silhouette.", {"Cardiomegaly": None}),
        ("The mediastinum is widened.", {"Cardiomegaly": None, "Enlarged Cardiomediastinum": "present"}),
    ],
    # "not definitely / clearly seen" leaves the finding in doubt (CheXpert: "not clearly seen")
    "not-definitely-seen": [
        ("The pulmonary nodules on the previous exam are not definitely seen.", {"Lung Lesion": "uncertain"}),
        ("A pneumothorax is not seen.", {"Pneumothorax": "absent"}),
    ],
    # a shunt catheter crossing the chest is a device (MeSH: Catheters, Indwelling; 3 of 4 tune + A)
    "shunt": [
        ("VP shunt tubing noted.", {"Support Devices": "present"}),
        ("Shunt tubing courses along the anterior left hemithorax.", {"Support Devices": "present"}),
        ("TIPS shunt visualized.", {"Support Devices": None}),
    ],
    # an infection that is not named pneumonia is an uncertain Pneumonia at most (MeSH codes none of the
    # tune + A ones as Pneumonia; CheXpert's pneumonia.txt reads them as positive); it does not make a
    # named pneumonia in its sentence uncertain
    "infection": [
        ("Interstitial opacities most consistent with atypical infectious process.", {"Pneumonia": "uncertain"}),
        ("Acute onset right basal chest infection.", {"Pneumonia": "uncertain"}),
        ("Right lower lobe pneumonia, an infectious process.", {"Pneumonia": "present"}),
        ("No evidence of infection.", {"Pneumonia": "absent"}),
    ],
}


@pytest.mark.parametrize("text,expected", _params(ROUND4_CASES))
def test_round4_versus_differential_and_infection(nlp, text, expected):
    assert check(text, list(expected)) == expected


@pytest.mark.parametrize(
    "text,finding,location",
    [
        # a plural lobe or lung zone without a side word is on both sides (as "bases" and "apices" are)
        ("Interstitial opacities in the lower lobes.", "Lung Opacity", "bilateral lower"),
        ("Nodular opacities in the upper lobes.", "Lung Opacity", "bilateral upper"),
        ("Patchy opacities throughout the lungs.", "Lung Opacity", "bilateral"),
        ("Right lower lobe opacity.", "Lung Opacity", "right lower"),
        ("Increased interstitial markings in the lower lungs, edema versus chronic interstitial changes.", "Edema",
         "bilateral lower"),
        ("Left lower lobe atelectasis versus infiltrate.", "Atelectasis", "left lower"),
        # the side reaches the second alternative (present: test_round4_versus_differential_and_infection)
        ("Left lower lobe atelectasis versus infiltrate.", "Lung Opacity", "left"),
    ],
)
def test_round4_sides_of_plural_zones_and_versus(nlp, text, finding, location):
    mentions = [m for m in extract_mentions(text) if m.finding == finding]
    assert mentions, text
    assert {m.location for m in mentions} == {location}, text


def test_hedged_target_rows_are_only_the_infection_words():
    rows = [r["literal"] for r in polarity.target_rows() if r["polarity"] == "hedged"]
    assert rows == ["infection", "infectious process", "infectious"]

