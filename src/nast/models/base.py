"""The family-independent part of :class:`VLModel`: image preprocessing and the text-layer API.

Grayscale chest X-rays
----------------------
All three families were built for RGB input. A CXR is a single-channel image, so
:meth:`VLModel.preprocess` handles it explicitly instead of relying on PIL's implicit conversion:

1. convert to ``"L"`` (8-bit luminance; an RGB or 16-bit input is reduced to one channel),
2. resize the shorter side to the model's input size (bicubic, antialiased) and centre-crop,
3. scale to [0, 1] and **replicate** the single channel to the model's channel count (3 for every
   family here) -- the three channels are identical copies, never a false-colour mapping,
4. normalise each channel with the model's own mean / std (OpenAI CLIP statistics unless the
   checkpoint's config says otherwise).

Text-layer decomposition (used by causal tracing)
-------------------------------------------------
Every family exposes its text encoder as ``embed -> block_0 .. block_{L-1} -> readout``::

    h0  = vl.text_embed(tokens)              # [B, T, W]  layer 0 (embeddings output)
    ctx = vl.text_context(tokens, h0)        # masks + readout index, family specific
    h   = vl.text_block(i, h, ctx)           # [B, T, W]  output of block i = layer i + 1
    z   = vl.text_readout(h, ctx)            # [B, D]     L2-normalised text embedding

``text_readout(run all blocks)`` equals :meth:`encode_text` (tests check it for each family);
``encode_text`` itself always goes through the library's own forward so PEFT-wrapped modules work.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without CUDA is a one-line StageError."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        from nast.config import params_file
        from nast.errors import StageError

        raise StageError(f"{params_file()}: model.device: {device} but CUDA is not available on this machine "
                         f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use auto or cpu")
    return torch.device(device)


def grayscale_crop(img: Image.Image, size: int) -> Tensor:
    """Steps 1-2 of the module docstring: PIL image -> ``uint8 [1, size, size]`` (luminance,
    bicubic antialiased resize of the shorter side, centre crop). What the pre-resized image cache
    (:mod:`nast.models.image_cache`) stores."""
    gray = img.convert("L")
    gray = TF.resize(gray, size, interpolation=InterpolationMode.BICUBIC, antialias=True)
    gray = TF.center_crop(gray, [size, size])
    return TF.pil_to_tensor(gray)  # [1, H, W] uint8


def crop_to_tensor(crop: Tensor, mean: tuple[float, ...], std: tuple[float, ...], channels: int = 3) -> Tensor:
    """Steps 3-4: ``uint8 [1, H, W]`` -> normalised ``[channels, H, W]`` float tensor."""
    x = crop.float().div_(255.0)  # [1, H, W]
    x = x.expand(channels, -1, -1).clone()  # explicit replication of the one channel
    return TF.normalize(x, list(mean)[:channels], list(std)[:channels])


def grayscale_to_tensor(
    img: Image.Image,
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    channels: int = 3,
) -> Tensor:
    """PIL image -> normalised ``[channels, size, size]`` float tensor (see module docstring)."""
    return crop_to_tensor(grayscale_crop(img, size), mean, std, channels)


class VLModel:
    """One interface over the CLIP families (see ``docs/CONTRACTS.md``).

    Subclasses set ``family``, ``model``, ``image_size``, ``mean``, ``std`` and implement the
    tokenizer, the two encoders, the layer stack and the text-layer decomposition.
    """

    family: str = ""
    #: the module suffixes (relative to one text block) that get LoRA adapters
    lora_suffixes: tuple[str, ...] = ()

    def __init__(self, model: nn.Module, *, image_size: int, mean, std, channels: int = 3,
                 device: torch.device | str = "cpu", config: dict[str, Any] | None = None):
        self.model = model
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.channels = int(channels)
        self.device = torch.device(device)
        self.config = dict(config or {})
        #: the pre-resized image cache the streamed loaders read (None: the files)
        self.image_cache = None

    # ------------------------------------------------------------------ images
    def preprocess(self, img: Image.Image) -> Tensor:
        """PIL image (any mode) -> ``[C, H, W]``; grayscale replicated to C channels explicitly."""
        return grayscale_to_tensor(img, self.image_size, self.mean, self.std, self.channels)

    def use_image_cache(self, cache) -> None:
        """Read images from ``cache`` (a :class:`nast.models.image_cache.ImageCache` at this model's
        input size, or None) in the streamed loaders of :mod:`nast.models.embeddings`."""
        if cache is not None and int(cache.size) != self.image_size:
            from nast.config import params_file
            from nast.errors import StageError

            raise StageError(f"{cache.folder}: images cached at {cache.size} px but the model takes "
                             f"{self.image_size} px; set data.image_cache_size: {self.image_size} in "
                             f"{params_file()} (and rerun cache-images)")
        self.image_cache = cache

    def from_crop(self, crop: Tensor) -> Tensor:
        """A cached ``uint8 [1, H, W]`` crop (:func:`grayscale_crop` at ``image_size``) -> the
        tensor :meth:`preprocess` gives for the same image (the same float operations)."""
        return crop_to_tensor(crop, self.mean, self.std, self.channels)

    def encode_image(self, pixels: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def patch_embeddings(self, pixels: Tensor) -> Tensor | None:
        """Per-location image embeddings ``[B, h, w, D]`` in the joint space (not normalised), or
        None when the architecture has no spatial token map. Used for the model's own
        patch-text similarity map (:mod:`nast.grounding.attribution`)."""
        return None

    # ------------------------------------------------------------------- text
    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode_text(self, tokens: dict[str, Tensor]) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def token_lengths(self, tokens: dict[str, Tensor]) -> Tensor:
        """Number of real (non-padding) tokens per row, ``[B]``."""
        return tokens["attention_mask"].sum(-1)

    def text_layers(self) -> list[nn.Module]:  # pragma: no cover - abstract
        raise NotImplementedError

    def text_layer_prefix(self) -> str:  # pragma: no cover - abstract
        """Module name of the layer ModuleList relative to ``self.model``."""
        raise NotImplementedError

    def text_module(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def logit_scale(self) -> Tensor:
        return self.model.logit_scale

    @property
    def n_text_layers(self) -> int:
        return len(self.text_layers())

    def lora_target_modules(self, layers: list[int] | None = None) -> list[str]:
        """Full module names (relative to ``self.model``) for PEFT ``target_modules``.

        ``layers`` selects text blocks by index (e.g. the top-k CTE layers); None = all blocks.
        """
        prefix = self.text_layer_prefix()
        blocks = self.text_layers()
        idx = range(len(blocks)) if layers is None else sorted(set(int(i) for i in layers))
        names: list[str] = []
        for i in idx:
            if not 0 <= i < len(blocks):
                raise IndexError(f"text layer {i} out of range (model has {len(blocks)})")
            for name, _module in blocks[i].named_modules():
                if any(name == s or name.endswith("." + s) for s in self.lora_suffixes):
                    names.append(f"{prefix}.{i}.{name}")
        return names

    def lora_target_regex(self, layers: list[int] | None = None) -> str:
        """The same modules as one anchored regex, for ``peft.LoraConfig(target_modules=...)``.

        PEFT matches a *list* of names by suffix, so ``transformer.resblocks.0.attn`` would also
        match ``visual.transformer.resblocks.0.attn`` (open_clip's vision tower uses the same block
        names). A string is matched with ``re.fullmatch`` against the full module name, which is exact.
        """
        import re

        names = self.lora_target_modules(layers)
        return "^(?:" + "|".join(re.escape(n) for n in names) + ")$"

    # ------------------------------------------- text-layer decomposition (tracing)
    def text_embed(self, tokens: dict[str, Tensor]) -> Tensor:  # pragma: no cover - abstract
        """Layer-0 hidden states ``[B, T, W]``."""
        raise NotImplementedError

    def text_context(self, tokens: dict[str, Tensor], hidden: Tensor) -> dict[str, Any]:  # pragma: no cover
        """Masks and readout indices for a batch whose states are ``hidden`` ``[B, T, W]``."""
        raise NotImplementedError

    def text_block(self, i: int, hidden: Tensor, ctx: dict[str, Any]) -> Tensor:  # pragma: no cover
        """Output of text block ``i`` (``[B, T, W]``)."""
        raise NotImplementedError

    def text_readout(self, hidden: Tensor, ctx: dict[str, Any]) -> Tensor:  # pragma: no cover
        """Final hidden states -> L2-normalised text embedding ``[B, D]``."""
        raise NotImplementedError

    def causal_readout_index(self, tokens: dict[str, Tensor]) -> Tensor | None:
        """For causal text towers: the position the readout reads (``[B]``); positions after it
        cannot influence the text embedding. None for bidirectional towers (BERT)."""
        return None

    # ------------------------------------- causal towers: blocks on a suffix (tracing)
    def runs_suffix(self, i: int) -> bool:
        """Whether text block ``i`` can run on a suffix of the positions against cached keys and
        values of the positions before it (:meth:`text_block_kv`, :meth:`text_block_suffix`).
        False (the default, and for bidirectional towers): tracing runs whole blocks."""
        return False

    def text_block_kv(self, i: int, hidden: Tensor) -> Tensor:  # pragma: no cover - abstract
        """The keys and values block ``i`` computes from its input ``hidden`` ``[B, T, W]``:
        ``[B, T, 2W]`` (for :meth:`text_block_suffix`)."""
        raise NotImplementedError

    def text_block_suffix(self, i: int, suffix: Tensor, kv_prefix: Tensor) -> Tensor:  # pragma: no cover
        """Block ``i`` on positions ``P..P+S-1`` (input ``suffix`` ``[B, S, W]``) of rows whose first
        ``P`` positions had the keys and values ``kv_prefix`` ``[B, P, 2W]`` (:meth:`text_block_kv`
        of their input): equal to ``text_block(i, cat(prefix, suffix))[:, P:]`` in a causal tower,
        where no later position changes an earlier one (tests/trace/test_cte.py)."""
        raise NotImplementedError

    def text_states(self, tokens: dict[str, Tensor]) -> tuple[list[Tensor], dict[str, Any]]:
        """All L+1 hidden states (layer 0 = embeddings) and the context, via the decomposition."""
        h = self.text_embed(tokens)
        ctx = self.text_context(tokens, h)
        states = [h]
        for i in range(self.n_text_layers):
            h = self.text_block(i, h, ctx)
            states.append(h)
        return states, ctx

    def encode_text_trimmed(self, tokens: dict[str, Tensor]) -> Tensor:
        """``encode_text`` on tokens trimmed to the longest real row, via the decomposition.

        Padding after the longest real row cannot change any embedding (causal towers read out at
        or before it; masked towers mask it), so the result equals ``encode_text`` (tested for all
        three families) at a fraction of the cost for short captions. Used by training/evaluation.
        """
        ids = tokens["input_ids"]
        T = int(self.token_lengths(tokens).max()) if ids.shape[0] else ids.shape[1]
        trimmed = {k: (v[:, :T] if isinstance(v, Tensor) and v.ndim == 2 else v) for k, v in tokens.items()}
        h = self.text_embed(trimmed)
        ctx = self.text_context(trimmed, h)
        for i in range(self.n_text_layers):
            h = self.text_block(i, h, ctx)
        return self.text_readout(h, ctx)

    # ----------------------------------------------------------------- misc
    def to(self, device) -> "VLModel":
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def eval(self) -> "VLModel":
        self.model.eval()
        return self

    def train(self, mode: bool = True) -> "VLModel":
        self.model.train(mode)
        return self

    @staticmethod
    def _normalize(x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(family={self.family!r}, text_layers={self.n_text_layers}, "
                f"image_size={self.image_size})")
