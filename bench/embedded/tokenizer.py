"""The embedded model's vocabulary: open_clip's own BPE, cut to 2048 tokens.

CLIP's 49408-token embedding table would be three quarters of ``ternbench-tiny``'s weights, though
the mini suite uses a few hundred tokens. open_clip's ``SimpleTokenizer`` reads any merges file
(``bpe_path``) and builds its vocabulary from the merges it holds, so a shorter merges file gives a
real open_clip tokenizer with a smaller vocabulary (``text_cfg.tokenizer_kwargs.bpe_path`` in the
model config). The file keeps, in CLIP's order, every merge that the mini suite's texts use (so
those words tokenize exactly as with the full CLIP vocabulary), then CLIP's earliest merges up to
the size; other text still tokenizes, into shorter pieces.

The shipped ``ternbench-tiny-bpe.txt.gz`` is ``build_bpe()``'s output (a test checks it), so it is
reproducible from the repo: ``python -m bench.embedded.tokenizer`` rewrites it.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from pathlib import Path

VOCAB_SIZE = 2048
BPE_FILE = "ternbench-tiny-bpe.txt.gz"
_BYTE_TOKENS = 512  # every byte, alone and as a word end
_SPECIAL_TOKENS = 2  # <start_of_text>, <end_of_text>


def _clip_merges() -> tuple[str, list[tuple[str, str]]]:
    from open_clip.tokenizer import default_bpe

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    # SimpleTokenizer reads lines[1 : 49152 - 256 - 2 + 1]; the first line is a header.
    return lines[0], [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]


def mini_texts() -> list[str]:
    """Every prompt and caption the mini suite can produce."""
    from bench.datasets import mini

    texts = [t.format(c=c) for ds in mini.MINI.values() for t in ds.templates for c in ds.classnames]
    texts += [c for combo in mini._COMBOS for c in mini.captions_for(*combo)]
    return texts


def _used_merges(texts: Iterable[str], ranks: dict[tuple[str, str], int]) -> set[tuple[str, str]]:
    """The merges CLIP's BPE applies to ``texts`` (the same loop as SimpleTokenizer.bpe)."""
    from open_clip.tokenizer import SimpleTokenizer, get_pairs

    tok = SimpleTokenizer()
    used: set[tuple[str, str]] = set()
    for text in texts:
        for token in tok.pat.findall(tok.clean_fn(text)):
            word = tuple("".join(tok.byte_encoder[b] for b in token.encode("utf-8")))
            word = word[:-1] + (word[-1] + "</w>",)
            while len(word) > 1:
                pair = min(get_pairs(word), key=lambda p: ranks.get(p, float("inf")))
                if pair not in ranks:
                    break
                used.add(pair)
                merged, i = [], 0
                while i < len(word):
                    if i < len(word) - 1 and (word[i], word[i + 1]) == pair:
                        merged.append(word[i] + word[i + 1])
                        i += 2
                    else:
                        merged.append(word[i])
                        i += 1
                word = tuple(merged)
    return used


def build_bpe(vocab_size: int = VOCAB_SIZE, texts: Iterable[str] | None = None) -> bytes:
    """The gzipped merges file for a ``vocab_size``-token vocabulary (deterministic bytes)."""
    header, merges = _clip_merges()
    ranks = {m: i for i, m in enumerate(merges)}
    keep = _used_merges(mini_texts() if texts is None else texts, ranks)
    budget = vocab_size - _BYTE_TOKENS - _SPECIAL_TOKENS
    if len(keep) > budget:
        raise ValueError(f"the texts need {len(keep)} merges, more than a {vocab_size}-token vocabulary holds")
    for m in merges:  # fill with CLIP's earliest (most frequent) merges
        if len(keep) >= budget:
            break
        keep.add(m)
    lines = [header] + [" ".join(m) for m in merges if m in keep]
    return gzip.compress("\n".join(lines).encode("utf-8"), compresslevel=9, mtime=0)


def bpe_path() -> Path:
    return Path(__file__).resolve().parent / BPE_FILE


if __name__ == "__main__":
    bpe_path().write_bytes(build_bpe())
    print(f"wrote {bpe_path()}")
