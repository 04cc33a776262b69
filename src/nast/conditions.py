"""CheXpert condition names, exactly as in the MIMIC-CXR-JPG CheXpert CSV header.

The four label states are kept distinct everywhere:
    1 = positive, 0 = negative, -1 = uncertain, null = not mentioned (blank).
"""

from __future__ import annotations

#: All 14 CheXpert label columns in the order of ``mimic-cxr-2.0.0-chexpert.csv``.
CHEXPERT_COLUMNS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)

#: The 13 conditions NAST samples from ("No Finding" is excluded).
CONDITIONS: tuple[str, ...] = tuple(c for c in CHEXPERT_COLUMNS if c != "No Finding")

#: Allowed label values besides null.
LABEL_VALUES: frozenset[int] = frozenset({1, 0, -1})

POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1
