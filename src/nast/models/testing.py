"""Build tiny random models of every family, offline, in each family's on-disk layout.

Used by the tests and the benchmarks (tiny configs shipped in ``nast/models/tiny/``, :data:`TINY_CONFIGS`). Each
``save_tiny_*`` writes a complete local model folder -- weights, configs, tokenizer files -- and
returns the ``model:`` params that :func:`nast.models.load_model` reads, so the tests exercise the
real loading path. Tokenizers are built in memory with the ``tokenizers`` library from a small
word list (no downloads); the native open_clip family uses open_clip's bundled BPE vocabulary.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

#: the tiny random-model configs of the three families (tests, benchmarks; read by no stage)
TINY_CONFIGS = Path(__file__).resolve().parent / "tiny"

#: a small vocabulary covering the demo reports' words (plus [UNK] for anything else)
WORDS = (
    ". , : ; - no not without free of there is are was were the a an and or with evidence "
    "normal abnormal left right bilateral mild moderate severe small large lung lungs heart size "
    "cardiac silhouette mediastinum pleural effusion effusions edema pulmonary pneumothorax "
    "cardiomegaly consolidation atelectasis opacity opacities lesion nodule fracture fractures "
    "pneumonia enlarged cardiomediastinum support devices device tube line clear stable "
    "seen present absent identified finding findings acute process chest radiograph"
).split()


def _seeded(seed: int) -> None:
    torch.manual_seed(seed)


def save_tiny_open_clip(config_json: str | Path, out_dir: str | Path, seed: int = 0) -> dict:
    """Random native open_clip CLIP from a model-config JSON -> checkpoint.pt + model_config.json."""
    from open_clip.model import CLIP

    from nast.models.families import _constructor_kwargs, split_config

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = json.loads(Path(config_json).read_text())
    model_cfg, _ = split_config(cfg)
    _seeded(seed)
    model = CLIP(**_constructor_kwargs(CLIP, model_cfg))
    torch.save(model.state_dict(), out / "checkpoint.pt")
    shutil.copyfile(config_json, out / "model_config.json")
    return {"family": "open_clip", "name": str(out / "model_config.json"),
            "checkpoint": str(out / "checkpoint.pt"), "device": "cpu"}


def _wordlevel_tokenizer(specials: list[str], lowercase: bool = True):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = {t: i for i, t in enumerate(specials + [w for w in WORDS if w not in specials])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok, vocab


def save_tiny_open_clip_hf(config_json: str | Path, bert_json: str | Path, out_dir: str | Path,
                           seed: int = 0) -> dict:
    """Random CustomTextCLIP with a tiny BERT tower, written like BiomedCLIP's folder:

    ``open_clip_config.json`` (text_cfg.hf_model_name -> ``bert/``), ``bert/config.json``,
    ``bert/vocab.txt`` + tokenizer files, ``open_clip_pytorch_model.bin``.
    """
    from open_clip.model import CustomTextCLIP
    from transformers import BertConfig, BertTokenizerFast

    from nast.models.families import _constructor_kwargs, split_config

    out = Path(out_dir)
    bert_dir = out / "bert"
    bert_dir.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = specials + [w for w in WORDS if w not in specials]
    (bert_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    try:  # transformers >= 5: the vocabulary is passed as a mapping
        tok = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)
    except TypeError:  # pragma: no cover - transformers 4.x
        tok = BertTokenizerFast(vocab_file=str(bert_dir / "vocab.txt"), do_lower_case=True)
    if len(tok) != len(vocab):  # pragma: no cover - transformers 4.x ignores vocab=
        tok = BertTokenizerFast(vocab_file=str(bert_dir / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(str(bert_dir))
    bert_cfg = json.loads(Path(bert_json).read_text())
    bert_cfg["vocab_size"] = len(vocab)
    bert_cfg["pad_token_id"] = 0
    BertConfig(**bert_cfg).save_pretrained(str(bert_dir))

    cfg = json.loads(Path(config_json).read_text())
    cfg_out = json.loads(json.dumps(cfg))
    model_cfg, _ = split_config(cfg_out)
    model_cfg["text_cfg"]["hf_model_name"] = "bert"
    model_cfg["text_cfg"]["hf_tokenizer_name"] = "bert"
    if "model_cfg" in cfg_out:
        cfg_out["model_cfg"] = model_cfg
    else:
        cfg_out = {**model_cfg, **({"preprocess_cfg": cfg["preprocess_cfg"]} if "preprocess_cfg" in cfg else {})}
    (out / "open_clip_config.json").write_text(json.dumps(cfg_out, indent=2))

    build_cfg = json.loads(json.dumps(model_cfg))
    build_cfg["text_cfg"]["hf_model_name"] = str(bert_dir)
    build_cfg["text_cfg"]["hf_model_pretrained"] = False
    build_cfg["text_cfg"].pop("hf_tokenizer_name", None)
    _seeded(seed)
    model = CustomTextCLIP(**_constructor_kwargs(CustomTextCLIP, build_cfg))
    torch.save(model.state_dict(), out / "open_clip_pytorch_model.bin")
    return {"family": "open_clip_hf", "name": str(out / "open_clip_config.json"),
            "checkpoint": str(out / "open_clip_pytorch_model.bin"), "device": "cpu"}


def save_tiny_hf_clip(config_json: str | Path, out_dir: str | Path, seed: int = 0) -> dict:
    """Random HuggingFace CLIPModel + a word-level tokenizer saved as a local model directory."""
    from tokenizers import processors
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok, vocab = _wordlevel_tokenizer(["<pad>", "[UNK]"])
    bos_id, eos_id = len(vocab), len(vocab) + 1  # EOS has the highest id, as in CLIP's BPE vocab
    tok.add_special_tokens(["<|startoftext|>", "<|endoftext|>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", bos_id), ("<|endoftext|>", eos_id)],
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<pad>", unk_token="[UNK]")
    fast.save_pretrained(str(out))

    cfg = json.loads(Path(config_json).read_text())
    cfg["text_config"].update(vocab_size=eos_id + 1, bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=0)
    _seeded(seed)
    model = CLIPModel(CLIPConfig(**cfg))
    model.save_pretrained(str(out))
    size = int(cfg["vision_config"]["image_size"])
    (out / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": {"height": size, "width": size}, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25],
    }))
    return {"family": "hf_clip", "name": str(out), "checkpoint": str(out), "device": "cpu"}


def save_tiny(family: str, config_dir: str | Path, out_dir: str | Path, seed: int = 0) -> dict:
    """Dispatch on family with the config file names of :data:`TINY_CONFIGS`."""
    d = Path(config_dir)
    if family == "open_clip":
        return save_tiny_open_clip(d / "open_clip_tiny.json", out_dir, seed)
    if family == "open_clip_hf":
        return save_tiny_open_clip_hf(d / "open_clip_hf_tiny.json", d / "bert_tiny.json", out_dir, seed)
    if family == "hf_clip":
        return save_tiny_hf_clip(d / "hf_clip_tiny.json", out_dir, seed)
    raise ValueError(f"unknown family {family!r}")
