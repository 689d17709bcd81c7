"""Which corpus and tokenizer a run trains on: ``--corpus DIR`` and ``--tokenizer char|bpe[:N]``.

    corpus_content_digest("data/mine")          # '3f9c0a12be': changes whenever a manifest changes
    corpus_tokenizer("data/mine", "bpe:64")     # sentencepiece BPE trained on the train transcripts

A run's config stores the corpus folder *and* its content digest; the run's hash uses the digest
(``runs.config_digest``), so a different corpus never reuses a run and a moved one still does.
A BPE model is a pure function of the train transcripts and N: it is trained once per corpus
digest under ``data/cache/tokenizers/`` and carried inside every checkpoint (``asr.pt``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from kdlab.data.tokenizer import BPETokenizer, CharTokenizer, Tokenizer

SPLITS = ("train", "dev", "test")
#: Vocabulary of ``--tokenizer bpe`` without ``:N``.
DEFAULT_BPE_SIZE = 256


def check_corpus_folder(corpus_dir: str | Path) -> Path:
    """`corpus_dir` as a Path; FileNotFoundError (naming what is missing) unless it holds the three manifests."""
    folder = Path(corpus_dir)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"corpus folder {folder} does not exist (or is not a folder); build one with "
            "`python -m kdlab data --out DIR` or import yours with `python -m kdlab data "
            "--librispeech ROOT --out DIR`"
        )
    missing = [f"{s}.jsonl" for s in SPLITS if not (folder / f"{s}.jsonl").is_file()]
    if missing:
        raise FileNotFoundError(
            f"corpus folder {folder} has no {', '.join(missing)}: it was not written by "
            "`python -m kdlab data` (synthesised or imported)"
        )
    return folder


def corpus_content_digest(corpus_dir: str | Path) -> str:
    """10-hex-digit hash of the three manifests' bytes (every utterance's audio path, duration, text)."""
    folder = check_corpus_folder(corpus_dir)
    digest = hashlib.sha256()
    for split in SPLITS:
        digest.update(split.encode() + b"\0" + (folder / f"{split}.jsonl").read_bytes())
    return digest.hexdigest()[:10]


def corpus_digest_of(corpus_dir: str | None, stored: str | None) -> str | None:
    """The content digest of a config's ``corpus_dir`` (None for the profile's corpus); a stored
    digest is kept, so a finished run still loads after its corpus folder moved."""
    if corpus_dir is None or stored is not None:
        return stored if corpus_dir is not None else None
    return corpus_content_digest(corpus_dir)


def parse_tokenizer_spec(spec: str) -> tuple[str, int | None]:
    """``"char"`` -> ("char", None); ``"bpe"`` / ``"bpe:N"`` -> ("bpe", N); ValueError otherwise."""
    kind, _, size = str(spec).partition(":")
    if kind == "char" and not size:
        return "char", None
    if kind == "bpe":
        if not size:
            return "bpe", DEFAULT_BPE_SIZE
        if size.isdigit() and int(size) > 0:
            return "bpe", int(size)
    raise ValueError(f"tokenizer must be 'char', 'bpe' or 'bpe:N' (N a positive vocabulary size), got {spec!r}")


def corpus_tokenizer(corpus_dir: str | Path, spec: str = "char") -> Tokenizer:
    """The tokenizer `spec` for the corpus in `corpus_dir` (BPE: trained on its train text once, then cached)."""
    kind, size = parse_tokenizer_spec(spec)
    if kind == "char":
        return CharTokenizer()
    from kdlab.data.manifest import read_manifest
    from kdlab.paths import data_cache

    folder = data_cache() / "tokenizers" / f"{corpus_content_digest(corpus_dir)}-bpe{size}"
    if (folder / "bpe.model").is_file():
        return BPETokenizer.load(folder / "bpe.model")
    texts = [u.text for u in read_manifest(Path(corpus_dir) / "train.jsonl")]
    staging = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")  # study workers may train it side by side
    tokenizer = BPETokenizer.train(texts, staging, size)
    try:
        staging.replace(folder)
    except OSError:  # another process put the same model there first
        shutil.rmtree(staging, ignore_errors=True)
    return tokenizer
