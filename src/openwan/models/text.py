"""umT5 text encoder (transformers ``UMT5EncoderModel``), its tokenizer and the official prompt cleaning."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
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
        stream: bool = False,
    ) -> T5TextEncoder:
        """Load from an official checkpoint folder (``models_t5_umt5-xxl-enc-bf16.pth`` +
        ``google/umt5-xxl/``), a diffusers folder (``text_encoder/`` + ``tokenizer/``), or a
        transformers UMT5 folder with its tokenizer files beside it.

        ``stream`` keeps the weights in the file: each encode reads one block at a time (and the
        embedding rows of the prompt's tokens), so the 11 GB umT5-XXL runs in about 1 GB of RAM
        on the CPU, at the cost of reading the file once per prompt."""
        root = Path(path)
        if (root / OFFICIAL_T5_FILE).is_file():
            source, tok_dir = root / OFFICIAL_T5_FILE, root / OFFICIAL_TOKENIZER_DIR
        elif (root / "text_encoder" / "config.json").is_file():
            source, tok_dir = root / "text_encoder", root / "tokenizer"
        elif (root / "config.json").is_file():
            source, tok_dir = root, root
        else:
            raise CheckpointError(
                f"no text encoder in {root}: expected {OFFICIAL_T5_FILE} (official layout), "
                "text_encoder/ (diffusers layout) or a UMT5 config.json"
            )
        if stream:
            model = _streamed_umt5(source, dtype)
        else:
            model = _load_official(source, dtype) if source.is_file() else _load_hf(source, dtype)
        tokenizer = _load_tokenizer(tok_dir)
        if text_len is None:
            text_len = int(getattr(model.config, "openwan_text_len", 512))
        if stream:
            return cls(model, tokenizer, text_len)  # runs on the CPU, wherever it is asked to go
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

    @property
    def streamed(self) -> bool:
        """The weights stay in the checkpoint file (``from_pretrained(stream=True)``)."""
        return bool(getattr(self.model, "openwan_streamed", False))

    def _apply(self, fn: Any, recurse: bool = True) -> T5TextEncoder:
        if self.streamed:
            return self  # reads its weights onto the CPU at each call: nothing to move
        return super()._apply(fn, recurse)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.streamed:
            device = torch.device("cpu")
        else:
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


class _Shelf:
    """A checkpoint's tensors left on disk: each read maps the file(s), copies what is asked
    into ordinary memory and unmaps them again, so pages read once do not stay resident."""

    def __init__(self, source: Path, dtype: torch.dtype) -> None:
        self.source, self.dtype = source, dtype
        if source.is_file():  # the official .pth
            self.files = [source]
        else:
            self.files = sorted(source.glob("*.safetensors"))
            if not self.files:
                raise CheckpointError(f"no .safetensors weights in {source}")

    def keys(self) -> set[str]:
        """Every tensor name of the safetensors shards, read from their headers alone."""
        from safetensors import safe_open

        out: set[str] = set()
        for file in self.files:
            try:
                with safe_open(str(file), framework="pt") as f:
                    out |= set(f.keys())
            except Exception as e:  # safetensors raises its own error type for a bad header
                raise CheckpointError(f"cannot read {file} ({e}); re-download it") from None
        return out

    def read(
        self, want: Callable[[str], bool], rows: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The tensors (transformers key names) whose key ``want`` accepts; with ``rows``, only
        those rows of them (an embedding lookup)."""
        from safetensors import safe_open

        from openwan.checkpoint.t5_format import official_to_hf

        def take(t: torch.Tensor) -> torch.Tensor:
            t = t[rows] if rows is not None else t
            return t.to(self.dtype, copy=True)  # a copy: never a view into the mapping

        out: dict[str, torch.Tensor] = {}
        if self.files[0].suffix != ".safetensors":
            sd = official_to_hf(load_state_dict(self.files[0]))  # memory-mapped
            out = {k: take(v) for k, v in sd.items() if want(k)}
            del sd
            return out
        for file in self.files:
            with safe_open(str(file), framework="pt") as f:
                for k in f.keys():  # noqa: SIM118 (a safe_open handle is not iterable)
                    if not want(k):
                        continue
                    if rows is None:
                        out[k] = f.get_tensor(k).to(self.dtype, copy=True)
                    else:  # only the asked rows are read
                        part = f.get_slice(k)
                        out[k] = torch.cat([part[int(r) : int(r) + 1] for r in rows]).to(self.dtype)
        return out


class _StreamedEmbedding(nn.Module):
    """The token embedding, read row by row from the checkpoint at every call."""

    def __init__(self, shelf: _Shelf, key: str) -> None:
        super().__init__()
        self.shelf, self.key = shelf, key

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        uniq, inverse = torch.unique(ids, return_inverse=True)
        rows = self.shelf.read(lambda k: k == self.key, rows=uniq)[self.key]
        return rows[inverse]


def _streamed_umt5(source: Path, dtype: torch.dtype) -> nn.Module:
    """A ``UMT5EncoderModel`` whose blocks live on the meta device between calls: a forward
    pre-hook reads block ``i``'s weights from the checkpoint, a forward hook drops them."""
    from transformers import UMT5Config, UMT5EncoderModel

    from openwan.checkpoint.t5_format import official_to_hf, umt5_config_from_official

    shelf = _Shelf(source, dtype)
    if source.is_file():  # one memory-mapped read gives the config (shapes) and the key set
        sd = load_state_dict(source)
        config, have = umt5_config_from_official(sd), set(official_to_hf(sd))
        del sd
    else:
        config = UMT5Config.from_pretrained(str(source), local_files_only=True)
        have = shelf.keys()
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    names = {k for k, _ in model.named_parameters()}
    embed_key = "shared.weight" if "shared.weight" in have else "encoder.embed_tokens.weight"
    odd = sorted((names ^ (have - {"encoder.embed_tokens.weight"})) - {"shared.weight"})
    if odd or embed_key not in have:
        raise CheckpointError(
            f"{source} does not match the umT5 encoder layout: {(odd or [embed_key])[:4]}"
        )
    model.shared = model.encoder.embed_tokens = _StreamedEmbedding(shelf, embed_key)
    final = shelf.read(lambda k: k == "encoder.final_layer_norm.weight")
    model.encoder.final_layer_norm.load_state_dict(
        {"weight": final["encoder.final_layer_norm.weight"]}, assign=True
    )
    for i, block in enumerate(model.encoder.block):
        prefix = f"encoder.block.{i}."

        def load(module: nn.Module, args: Any, _p: str = prefix) -> None:
            sd = {k[len(_p) :]: v for k, v in shelf.read(lambda k: k.startswith(_p)).items()}
            module.load_state_dict(sd, strict=True, assign=True)

        def drop(module: nn.Module, args: Any, output: Any) -> None:
            module.to("meta")

        block.register_forward_pre_hook(load)
        block.register_forward_hook(drop)
    model.openwan_streamed = True
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
