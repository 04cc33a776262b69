"""A stand-in for ``VLModel`` whose embeddings are written by hand: every text the evaluation may
encode has a vector in a table (any other text is a KeyError, so the test also sees *which* texts
the code scores), and every image is a flat grey PNG whose grey level picks its vector. Answers
of the evaluation on such a model are known by construction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def unit(*vecs) -> np.ndarray:
    v = np.sum(np.asarray(vecs, dtype=float), axis=0)
    n = np.linalg.norm(v)
    return v / n if n else v


def basis(k: int, dim: int) -> np.ndarray:
    e = np.zeros(dim)
    e[k] = 1.0
    return e


class StubVL:
    family = "stub"
    context_length = 77

    def __init__(self, text_vectors: dict[str, np.ndarray], image_vectors: dict[int, np.ndarray]):
        self.text_vectors = {t: torch.tensor(v, dtype=torch.float32) for t, v in text_vectors.items()}
        self.image_vectors = {g: torch.tensor(v, dtype=torch.float32) for g, v in image_vectors.items()}
        self.model = torch.nn.Identity()  # .eval() / .train() / .training
        self.device = torch.device("cpu")
        self._texts: list[str] = []
        self.encoded: set[str] = set()

    # text side: token ids index the texts seen so far
    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        ids = []
        for t in texts:
            self._texts.append(t)
            ids.append(len(self._texts) - 1)
        return {"input_ids": torch.tensor(ids, dtype=torch.long).reshape(-1, 1)}

    def token_lengths(self, tokens) -> torch.Tensor:
        return torch.tensor([len(self._texts[int(i)].split()) + 2 for i in tokens["input_ids"][:, 0]])

    def encode_text(self, tokens) -> torch.Tensor:
        texts = [self._texts[int(i)] for i in tokens["input_ids"][:, 0]]
        self.encoded.update(texts)
        return torch.stack([self.text_vectors[t] for t in texts])

    encode_text_trimmed = encode_text

    # image side: a [1, 1, 1] "pixel tensor" holding the grey level
    def preprocess(self, img: Image.Image) -> torch.Tensor:
        return torch.tensor(float(np.asarray(img.convert("L")).mean())).reshape(1, 1, 1)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.image_vectors[int(round(float(p)))] for p in pixels.reshape(len(pixels), -1)[:, 0]])


def grey_images(root: Path, levels: list[int]) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for g in levels:
        p = root / f"grey{g}.png"
        Image.new("L", (8, 8), color=g).save(p)
        out.append(str(p))
    return out
