"""umT5 text encoder (transformers ``UMT5EncoderModel``), its tokenizer and the official prompt cleaning."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from openwan.checkpoint.io import CheckpointError, load_state_dict

OFFICIAL_T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
OFFICIAL_TOKENIZER_DIR = "google/umt5-xxl"


def clean_prompt(text: str) -> str:
    """Official cleaning: ftfy, HTML unescape twice, strip, collapse whitespace runs."""
    import ftfy

    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


class T5TextEncoder(nn.Module):
    """Prompt -> per-token features ``[L_i, d_model]`` trimmed to the real token count (EOS included).

    The DiT zero-pads them to its ``text_len``; padding rows are not masked there (official).
    """

    def __init__(self, model: nn.Module, tokenizer: Any, text_len: int = 512) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.text_len = text_len

    @property
    def dim(self) -> int:
        return int(self.model.config.d_model)

    # ------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        text_len: int | None = None,
    ) -> T5TextEncoder:
        """Load from an official checkpoint folder (``models_t5_umt5-xxl-enc-bf16.pth`` +
        ``google/umt5-xxl/``), a diffusers folder (``text_encoder/`` + ``tokenizer/``), or a
        transformers UMT5 folder with its tokenizer files beside it."""
        root = Path(path)
        if (root / OFFICIAL_T5_FILE).is_file():
            model = _load_official(root / OFFICIAL_T5_FILE, dtype)
            tok_dir = root / OFFICIAL_TOKENIZER_DIR
        elif (root / "text_encoder" / "config.json").is_file():
            model = _load_hf(root / "text_encoder", dtype)
            tok_dir = root / "tokenizer"
        elif (root / "config.json").is_file():
            model = _load_hf(root, dtype)
            tok_dir = root
        else:
            raise CheckpointError(
                f"no text encoder in {root}: expected {OFFICIAL_T5_FILE} (official layout), "
                "text_encoder/ (diffusers layout) or a UMT5 config.json"
            )
        tokenizer = _load_tokenizer(tok_dir)
        if text_len is None:
            text_len = int(getattr(model.config, "openwan_text_len", 512))
        return cls(model.to(device).eval(), tokenizer, text_len)

    # ------------------------------------------------------------ running
    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask ``[B, text_len]`` (padded to ``text_len``, EOS appended)."""
        batch = self.tokenizer(
            [clean_prompt(p) for p in prompts],
            padding="max_length",
            truncation=True,
            max_length=self.text_len,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        return batch["input_ids"], batch["attention_mask"]

    def count_tokens(self, prompt: str) -> int:
        """Number of tokens of a prompt before truncation, EOS included."""
        return len(self.tokenizer(clean_prompt(prompt), add_special_tokens=True)["input_ids"])

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        return self.model(
            input_ids=ids.to(device), attention_mask=mask.to(device)
        ).last_hidden_state

    def encode(self, prompts: Sequence[str]) -> list[torch.Tensor]:
        ids, mask = self.tokenize(prompts)
        with torch.no_grad():
            hidden = self(ids, mask)  # [B, text_len, d_model] in the weight dtype
        lengths = mask.sum(dim=1).tolist()
        return [h[: int(n)] for h, n in zip(hidden, lengths)]


def _load_official(file: Path, dtype: torch.dtype) -> nn.Module:
    from transformers import UMT5EncoderModel

    from openwan.checkpoint.t5_format import official_to_hf, umt5_config_from_official

    sd = load_state_dict(file)
    config = umt5_config_from_official(sd)
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    hf = {k: v.to(dtype) for k, v in official_to_hf(sd).items()}
    # keep the tie: both names must refer to one tensor after the assign-load
    hf["encoder.embed_tokens.weight"] = hf["shared.weight"]
    try:
        model.load_state_dict(hf, strict=True, assign=True)
    except RuntimeError as e:
        raise CheckpointError(f"{file} does not match the umT5 encoder layout: {e}") from None
    model.encoder.embed_tokens = model.shared
    return model.eval()


def _load_hf(folder: Path, dtype: torch.dtype) -> nn.Module:
    from transformers import UMT5EncoderModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # progress belongs to the entry point, not a 1-second load

    try:
        return UMT5EncoderModel.from_pretrained(
            str(folder), dtype=dtype, local_files_only=True
        ).eval()
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot load the text encoder from {folder}: {e}") from None


def _load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    if not folder.is_dir():
        raise CheckpointError(f"tokenizer folder not found: {folder}")
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot load the tokenizer from {folder}: {e}") from None


# ---------------------------------------------------------------- tiny models
def tiny_umt5_config(
    vocab_size: int,
    d_model: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    d_ff: int = 128,
    text_len: int = 64,
):  # -> transformers.UMT5Config
    """A small umT5 encoder config (the embedded tiny model's text encoder)."""
    from openwan.checkpoint.t5_format import umt5_config

    config = umt5_config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=d_model // num_heads,
        d_ff=d_ff,
        num_layers=num_layers,
        num_heads=num_heads,
    )
    config.openwan_text_len = text_len  # stored in config.json; read back by from_pretrained
    return config


def train_tokenizer(corpus: Sequence[str], out_dir: str | Path, vocab_size: int = 1000) -> Path:
    """Train a sentencepiece unigram tokenizer on ``corpus`` and save it as a transformers
    ``T5Tokenizer`` folder (pad 0, eos 1, unk 2 as umT5; unseen characters map to unk)."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    cleaned = [clean_prompt(t) for t in corpus if t.strip()]
    if not cleaned:
        raise ValueError("cannot train a tokenizer on an empty corpus")
    model_bytes = _BytesSink()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(cleaned),
        model_writer=model_bytes,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        hard_vocab_limit=False,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_proto=model_bytes.data)
    vocab = [(sp.id_to_piece(i), float(sp.get_score(i))) for i in range(sp.get_piece_size())]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out))
    return out


class _BytesSink:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data
