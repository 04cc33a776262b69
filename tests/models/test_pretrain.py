"""`nast pretrain-base`: outputs, determinism, and resume after a stop between epochs."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from PIL import Image

from nast.cli import main
from nast.models.data import build_caption, report_sentences
from nast.models.pretrain import shift_batch
from nast.models.testing import TINY_CONFIGS

ROOT = Path(__file__).parents[2]
CONFIGS = TINY_CONFIGS
FINDINGS = ["There is a small left pleural effusion.", "Mild pulmonary edema.", "No pneumothorax.",
            "Heart size is normal.", "The lungs are clear."]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cohort")
    rows = []
    rng = np.random.default_rng(0)
    for i in range(14):
        img = tmp / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 256, size=(40, 40), dtype=np.uint8), "L").save(img)
        rows.append({"dicom_id": f"d{i:02d}", "split": "validate" if i >= 10 else "train", "image_path": str(img),
                     "findings": " ".join(FINDINGS[j] for j in rng.permutation(5)[: 2 + i % 3]),
                     "impression": None if i % 4 == 0 else "No acute process."})
    rows.append({"dicom_id": "empty", "split": "train", "image_path": "missing.jpg", "findings": None,
                 "impression": " "})  # no text: not a training pair (and its image is never opened)
    path = tmp / "cohort.parquet"
    pl.DataFrame(rows).write_parquet(path)
    return path


def _params(tmp: Path, epochs=3) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"].update(family="open_clip", name=str(CONFIGS / "open_clip_tiny.json"))
    params["pretrain"].update(epochs=epochs, batch_size=4, lr=0.002, num_threads=1, max_shift=2, seed=3)
    p = tmp / "params.yaml"
    p.write_text(yaml.safe_dump(params))
    return p


def test_pretrain_resume_reaches_the_same_weights(tmp_path, cohort):
    p = _params(tmp_path)
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert main(["pretrain-base", "--params", str(p), "--cohort", str(cohort), "--out", str(full)]) == 0
    assert main(["pretrain-base", "--params", str(p), "--cohort", str(cohort), "--out", str(resumed),
                 "--stop-after-epoch", "1"]) == 0
    assert not (resumed / "checkpoint.pt").exists() and (resumed / "state" / "last.pt").is_file()
    assert torch.load(resumed / "state" / "last.pt", weights_only=False)["epoch"] == 1
    assert main(["pretrain-base", "--params", str(p), "--cohort", str(cohort), "--out", str(resumed)]) == 0
    a = torch.load(full / "checkpoint.pt", weights_only=True)
    b = torch.load(resumed / "checkpoint.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    curve = pl.read_csv(full / "curve.csv")
    assert curve.columns == ["epoch", "loss", "val_loss", "val_r5"] and curve["epoch"].to_list() == [1, 2, 3]
    assert curve.equals(pl.read_csv(resumed / "curve.csv"))
    assert curve["loss"][-1] < curve["loss"][0]  # it learns something on 10 pairs
    assert (full / "model_config.json").is_file()
    # the written model loads through the common interface
    from nast.models import load_model

    vl = load_model({"family": "open_clip", "name": "unused-name", "checkpoint": str(full / "checkpoint.pt")}, "cpu")
    assert vl.n_text_layers == 3


def test_captions_shuffle_and_fit():
    sents = report_sentences("There is a small effusion. Mild edema.", "No pneumothorax.")
    assert sents == ["There is a small effusion.", "Mild edema.", "No pneumothorax."]
    assert build_caption(sents, [6, 3, 3], 100) == " ".join(sents)
    assert build_caption(sents, [6, 3, 3], 7) == "There is a small effusion."  # later ones do not fit
    seen = {build_caption(sents, [6, 3, 3], 100, np.random.default_rng(s)) for s in range(20)}
    assert len(seen) > 1  # the order changes with the RNG ...
    assert all(sorted(c.replace(". ", ".|").split("|")) == sorted(sents) for c in seen)  # ... the content not
    # with sections: the impression (group 0) always leads, findings (group 1) are a random subset
    caps = [build_caption(sents, [6, 3, 3], 100, np.random.default_rng(s), groups=[0, 1, 1]) for s in range(30)]
    assert all(c.startswith("There is a small effusion.") for c in caps)
    assert {len(c.split(". ")) for c in caps} == {1, 2, 3}


def test_shift_batch_moves_pixels():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    y = shift_batch(x, np.array([[1, -1]]))
    assert y[0, 0, 1, 0] == x[0, 0, 0, 1] and y[0, 0, 0].abs().sum() == 0 and y[0, 0, :, 3].abs().sum() == 0


def test_report_captions_modes_and_context(tiny_models):
    from nast.models.data import ReportCaptions

    vl = tiny_models["open_clip"]
    findings = ["No pneumothorax. There is no pleural effusion. " + "Heart size is normal. " * 30, None]
    impressions = ["Moderate right pleural effusion.", "No acute cardiopulmonary process."]
    imp = ReportCaptions(vl, findings, impressions, "impression")
    assert imp.captions(None) == impressions  # the impression alone
    assert imp.captions(np.random.default_rng(0)) == impressions
    rep = ReportCaptions(vl, findings, impressions, "report")
    full = rep.captions(None)
    assert full[0].startswith("Moderate right pleural effusion. No pneumothorax. There is no pleural effusion.")
    assert full[1] == impressions[1]  # no findings section
    # whole sentences only, and the caption fits the model's text context (start/end included)
    assert full[0].endswith(".") and int(vl.token_lengths(vl.tokenize([full[0]]))[0]) <= vl.context_length
    assert all(s in rep.sentences[0] for s in full[0].replace(". ", ".|").split("|"))
    # a report without an impression falls back to its findings in impression mode
    only_findings = ReportCaptions(vl, ["Mild edema."], [None], "impression")
    assert only_findings.captions(None) == ["Mild edema."]
    # the same generator gives the same captions; another one another subset
    a = rep.captions(np.random.default_rng([0, 1]))
    assert a == rep.captions(np.random.default_rng([0, 1]))
    assert {rep.captions(np.random.default_rng([0, e]))[0] for e in range(8)} != {a[0]}
    with pytest.raises(ValueError, match="caption mode"):
        ReportCaptions(vl, findings, impressions, "claims")
