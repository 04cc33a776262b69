"""``nast pretrain-base``: train the tiny demo open_clip CLIP on the demo TRAIN split (CLIP loss).

The model is the open_clip config ``nast/models/configs/nast-tiny-clip.json`` (or the JSON named by
``params.model.name``): a small ModifiedResNet image tower (64 px input, one bottleneck per stage,
width 32, attention pooling) and a causal text transformer (4 blocks, width 128, context 64) with
open_clip's bundled BPE ``SimpleTokenizer``. A ViT of the same size (patch 8) learned the ~450
demo images far worse: validation R@5 0.32 against 0.86 for the ResNet after the same 20 epochs.

Data: one (frontal image, report) pair per cohort row of the train split. ``pretrain.caption``
picks the caption (:class:`nast.models.data.ReportCaptions`): ``impression`` (default) is the
impression alone, as CheXzero was trained, in a shuffled sentence order; ``report`` adds a random
shuffled subset of the findings sentences, as many as fit the context. The validate split uses
the original order. Images are preprocessed
once (grayscale -> 3 identical channels, :meth:`VLModel.preprocess`) and augmented per epoch by a
small random translation (zero-padded shift of up to ``pretrain.max_shift`` pixels).

Training: AdamW (``pretrain.lr``, ``weight_decay`` on matrices only), linear warm-up + cosine decay
per step, symmetric CLIP loss (``open_clip.loss.ClipLoss``) with a learnable temperature clamped
at 100. After each epoch the validate split's loss and R@5 (mean of image->text and text->image)
go to ``curve.csv``.

Determinism and resume: all randomness of epoch ``e`` (batch order, captions, shifts) comes from
``numpy.random.default_rng([seed, e])``; torch uses deterministic algorithms and a fixed thread
count (``pretrain.num_threads``). After every epoch ``state/last.pt`` holds model, optimizer,
scheduler and torch RNG state plus the curve so far (written atomically). A rerun with the same
inputs continues after the last finished epoch and ends with the same weights as an uninterrupted
run (a test checks bitwise equality). ``--stop-after-epoch N`` stops after epoch N (for that test).

Outputs in ``--out``: ``checkpoint.pt`` (state dict), ``model_config.json``, ``curve.csv``, ``state/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from nast.errors import StageError

log = logging.getLogger(__name__)


COLUMNS = ("dicom_id", "split", "image_path", "findings", "impression")


# ---------------------------------------------------------------------------- pure parts
def select_pairs(cohort: pl.DataFrame, split: str) -> pl.DataFrame:
    """Rows of ``split`` with some report text, sorted by dicom_id (deterministic)."""
    df = cohort.filter(pl.col("split") == split)
    text = pl.concat_str([pl.col("findings").fill_null(""), pl.col("impression").fill_null("")], separator=" ")
    return df.filter(text.str.strip_chars().str.len_chars() > 0).sort("dicom_id")


def shift_batch(x: torch.Tensor, shifts: np.ndarray) -> torch.Tensor:
    """Translate each image ``x[i]`` by ``shifts[i] = (dy, dx)`` pixels, zero-padded (= mean grey)."""
    if not shifts.any():
        return x
    out = torch.zeros_like(x)
    H, W = x.shape[-2:]
    for i, (dy, dx) in enumerate(shifts.tolist()):
        ys, yd = (slice(0, H - dy), slice(dy, H)) if dy >= 0 else (slice(-dy, H), slice(0, H + dy))
        xs, xd = (slice(0, W - dx), slice(dx, W)) if dx >= 0 else (slice(-dx, W), slice(0, W + dx))
        out[i, :, yd, xd] = x[i, :, ys, xs]
    return out


def retrieval_r5(img: torch.Tensor, txt: torch.Tensor) -> float:
    """Mean of image->text and text->image recall@5 (pair i is the match of i)."""
    sim = img @ txt.T
    k = min(5, sim.shape[0])
    target = torch.arange(sim.shape[0])
    i2t = (sim.topk(k, dim=1).indices == target[:, None]).any(1).float().mean()
    t2i = (sim.T.topk(k, dim=1).indices == target[:, None]).any(1).float().mean()
    return float((i2t + t2i) / 2)


def _lr_lambda(total_steps: int, warmup: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        p = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, p)))

    return f


def run_fingerprint(obj: Any) -> str:
    from nast.io import json_default

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=json_default).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- training
class Pretrainer:
    """Holds the data tensors and the model; :meth:`fit` runs (or resumes) the epochs."""

    def __init__(self, model_cfg: dict, pre_cfg: dict, train: pl.DataFrame, val: pl.DataFrame,
                 pp: dict, out: Path):
        from open_clip.loss import ClipLoss
        from open_clip.model import CLIP

        from nast.models.data import ReportCaptions, load_image
        from nast.models.families import OpenClipModel, _constructor_kwargs

        self.pp, self.out = pp, out
        self.caption_mode = str(pp["caption"])
        self.seed = int(pp["seed"])
        torch.manual_seed(self.seed)
        self.model = CLIP(**_constructor_kwargs(CLIP, model_cfg))
        vis = self.model.visual
        size = vis.image_size[0] if isinstance(vis.image_size, (tuple, list)) else vis.image_size
        self.vl = OpenClipModel(self.model, image_size=int(size), mean=pre_cfg.get("mean", (0.5,) * 3),
                                std=pre_cfg.get("std", (0.25,) * 3))
        self.loss_fn = ClipLoss()

        def prep(df: pl.DataFrame):
            imgs = torch.stack([self.vl.preprocess(load_image(p)) for p in df["image_path"].to_list()])
            return imgs, ReportCaptions(self.vl, df["findings"].to_list(), df["impression"].to_list(),
                                        self.caption_mode)

        self.train_x, self.train_caps = prep(train)
        self.val_x, self.val_caps = prep(val) if val.height else (None, None)
        self.n_train = self.train_x.shape[0]
        if self.n_train < 2:
            raise StageError(f"pretrain-base: need at least 2 train rows with report text, got {self.n_train}")
        bs = min(int(pp["batch_size"]), self.n_train)
        self.batch_size = bs
        self.steps_per_epoch = self.n_train // bs  # drop_last: every batch has bs pairs
        decay = [p for n, p in self.model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
        no_decay = [p for n, p in self.model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": float(pp["weight_decay"])}, {"params": no_decay, "weight_decay": 0.0}],
            lr=float(pp["lr"]))
        total = self.steps_per_epoch * int(pp["epochs"])
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, _lr_lambda(total, max(1, int(0.05 * total))))

    def train_epoch(self, epoch: int) -> float:
        from open_clip.tokenizer import tokenize  # noqa: F401  (SimpleTokenizer used through vl)

        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.n_train)
        captions = self.train_caps.captions(rng)
        ms = int(self.pp["max_shift"])
        shifts = rng.integers(-ms, ms + 1, size=(self.n_train, 2)) if ms > 0 else np.zeros((self.n_train, 2), int)
        self.model.train()
        losses = []
        for b in range(self.steps_per_epoch):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = shift_batch(self.train_x[idx], shifts[idx])
            ids = self.vl.tokenize([captions[i] for i in idx])["input_ids"]
            img = F.normalize(self.model.encode_image(x), dim=-1)
            txt = F.normalize(self.model.encode_text(ids), dim=-1)
            loss = self.loss_fn(img, txt, self.model.logit_scale.exp())
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.sched.step()
            with torch.no_grad():
                self.model.logit_scale.clamp_(0, math.log(100))
            losses.append(float(loss.detach()))
        return float(np.mean(losses))

    @torch.no_grad()
    def validate(self) -> tuple[float, float]:
        if self.val_x is None or self.val_x.shape[0] < 2:
            return float("nan"), float("nan")
        self.model.eval()
        captions = self.val_caps.captions(None)
        img = torch.cat([self.vl.encode_image(self.val_x[i:i + 256]) for i in range(0, len(captions), 256)])
        txt = torch.cat([self.vl.encode_text(self.vl.tokenize(captions[i:i + 256]))
                         for i in range(0, len(captions), 256)])
        loss = float(self.loss_fn(img, txt, self.model.logit_scale.exp()))
        return loss, retrieval_r5(img, txt)

    # -- state -----------------------------------------------------------------------
    def save_state(self, path: Path, epoch: int, curve: list[dict], fingerprint: str) -> None:
        from nast.io import atomic_write

        with atomic_write(path) as tmp:
            torch.save({"epoch": epoch, "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                        "scheduler": self.sched.state_dict(), "torch_rng": torch.get_rng_state(),
                        "curve": curve, "fingerprint": fingerprint}, tmp)

    def load_state(self, path: Path, fingerprint: str) -> tuple[int, list[dict]]:
        if not path.is_file():
            return 0, []
        st = torch.load(path, map_location="cpu", weights_only=False)
        if st.get("fingerprint") != fingerprint:
            log.warning("%s belongs to other inputs/params; starting from scratch", path)
            return 0, []
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["optimizer"])
        self.sched.load_state_dict(st["scheduler"])
        torch.set_rng_state(st["torch_rng"])
        log.info("resuming after epoch %d from %s", st["epoch"], path)
        return int(st["epoch"]), list(st["curve"])

    def fit(self, fingerprint: str, stop_after: int | None = None) -> tuple[list[dict], bool]:
        state = self.out / "state" / "last.pt"
        start, curve = self.load_state(state, fingerprint)
        epochs = int(self.pp["epochs"])
        for epoch in range(start + 1, epochs + 1):
            loss = self.train_epoch(epoch)
            val_loss, val_r5 = self.validate()
            curve.append({"epoch": epoch, "loss": loss, "val_loss": val_loss, "val_r5": val_r5})
            log.info("epoch %d/%d loss %.4f val_loss %.4f val_r5 %.3f", epoch, epochs, loss, val_loss, val_r5)
            self.save_state(state, epoch, curve, fingerprint)
            if stop_after is not None and epoch >= stop_after and epoch < epochs:
                return curve, False
        return curve, True



