"""bench.embedded: the tiny model's config and its cut-down open_clip vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
from open_clip.tokenizer import SimpleTokenizer

from bench.embedded import EMBEDDED_DIR, TINY_MODEL, register, resolved_config
from bench.embedded.tokenizer import VOCAB_SIZE, bpe_path, build_bpe, mini_texts


def test_shipped_vocabulary_is_what_build_bpe_writes():
    # Reproducible from the repo: `python -m bench.embedded.tokenizer` rewrites the same bytes.
    assert bpe_path().read_bytes() == build_bpe()


def test_registered_tokenizer_has_the_models_vocabulary_and_fits_every_mini_text():
    register()
    cfg = open_clip.get_model_config(TINY_MODEL)["text_cfg"]
    tok = open_clip.get_tokenizer(TINY_MODEL)
    assert isinstance(tok, SimpleTokenizer) and tok.vocab_size == cfg["vocab_size"] == VOCAB_SIZE
    full = SimpleTokenizer()
    for text in mini_texts():
        ids = tok.encode(text)
        # The mini suite's words are the tokens CLIP's full vocabulary makes of them ...
        assert [tok.decoder[i] for i in ids] == [full.decoder[i] for i in full.encode(text)], text
        assert len(ids) + 2 <= cfg["context_length"], text  # ... and fit with <sot> and <eot>
    # Argmax pooling finds <eot> as the largest id: it must stay the last token of the vocabulary.
    assert tok.eot_token_id == VOCAB_SIZE - 1
    # Any other text still tokenizes, into ids the embedding table has.
    assert int(tok(["an aeroplane over the sea, 1984"]).max()) < VOCAB_SIZE


def test_resolved_config_points_at_the_shipped_file(tmp_path):
    cfg = resolved_config(EMBEDDED_DIR / f"{TINY_MODEL}.json")
    assert Path(cfg["text_cfg"]["tokenizer_kwargs"]["bpe_path"]) == bpe_path()
    absolute = tmp_path / "x.json"
    absolute.write_text(json.dumps({"text_cfg": {"tokenizer_kwargs": {"bpe_path": "/elsewhere/v.gz"}}}))
    assert resolved_config(absolute)["text_cfg"]["tokenizer_kwargs"]["bpe_path"] == "/elsewhere/v.gz"
