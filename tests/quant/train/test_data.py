"""Training data: resolving patterns, deterministic stream, resume position, rank slices, captions, errors."""

from __future__ import annotations

import pytest

from quant.train.data import DataError, PairBatches, _raw_samples, caption_of, raw_stream, resolve_sources


def _keys(stream, n):
    return [(s["__url__"], s["__key__"]) for s in (next(stream) for _ in range(n))]


def test_folder_resolves_train_split_with_labels(color_data):
    (src,) = resolve_sources([str(color_data)])
    assert [u.rsplit("/", 2)[-2:] for u in src.urls] == [["train", "0.tar"], ["train", "1.tar"]]
    assert src.classnames == ("red", "green", "blue", "yellow")
    assert src.templates == ("a photo of {c}.", "a {c} square.")


def test_brace_and_glob_patterns_resolve_and_find_classnames(color_data):
    (brace,) = resolve_sources([f"{color_data}/train/{{0..1}}.tar"])
    (glob_,) = resolve_sources([f"{color_data}/train/*.tar"])
    assert brace.urls == glob_.urls and len(brace.urls) == 2
    assert brace.classnames == ("red", "green", "blue", "yellow")  # found in the shard folder's parent


def test_remote_patterns_are_kept_for_webdataset():
    (src,) = resolve_sources(["https://example.org/cc12m-{00000..00002}.tar"])
    assert src.urls == tuple(f"https://example.org/cc12m-0000{i}.tar" for i in range(3))


@pytest.mark.parametrize("pattern, words", [
    ("{root}/nothing/{{0..3}}.tar", ["matches no shard", "does not exist"]),
    ("{root}/train/{{0..5}}.tar", ["4 of 6 shards are missing", "2.tar"]),
    ("{root}/train/*.zip", ["matches no shard", "holds: 0.tar"]),
])
def test_patterns_matching_no_shard_are_clear_errors(color_data, pattern, words):
    with pytest.raises(DataError) as e:
        resolve_sources([pattern.format(root=color_data)])
    for w in words:
        assert w in str(e.value)


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(DataError, match="holds no training shards"):
        resolve_sources([str(tmp_path)])


def test_stream_is_deterministic_and_resume_skips_exactly(color_data, caption_data):
    sources = resolve_sources([str(color_data), str(caption_data)])
    first = _keys(raw_stream(sources, seed=3, shuffle_buffer=16), 70)  # 44 samples an epoch: crosses epochs
    assert first == _keys(raw_stream(sources, seed=3, shuffle_buffer=16), 70)
    assert first[25:] == _keys(raw_stream(sources, seed=3, shuffle_buffer=16, start=25), 45)
    assert first != _keys(raw_stream(sources, seed=4, shuffle_buffer=16), 70)
    assert sorted(first[:44]) == sorted(set(first[:44]))  # one epoch holds every sample once


def test_two_ranks_together_see_the_one_process_batch(color_data, caption_data):
    from quant.train.models import val_transform

    sources = resolve_sources([str(color_data), str(caption_data)])
    import open_clip

    from bench.embedded import register

    register()
    tf = val_transform(open_clip.create_model("ternbench-tiny"))
    one = PairBatches(sources, tf, 8, seed=0, shuffle_buffer=16)
    r0 = PairBatches(sources, tf, 8, seed=0, shuffle_buffer=16, rank=0, world_size=2)
    r1 = PairBatches(sources, tf, 8, seed=0, shuffle_buffer=16, rank=1, world_size=2)
    for _ in range(2):
        (img, txt, g), (i0, t0, g0), (i1, t1, g1) = next(one), next(r0), next(r1)
        assert txt == t0 + t1
        assert (img == __import__("torch").cat([i0, i1])).all()
        assert (g == g0).all() and (g == g1).all() and len(g) == 8
    assert one.position == r0.position == 16
    with pytest.raises(DataError, match="multiple of 3"):
        PairBatches(sources, tf, 8, seed=0, world_size=3)


def test_cached_batches_equal_the_uncached_ones_over_several_epochs(color_data, caption_data):
    import open_clip
    import torch

    from bench.embedded import register
    from quant.train.models import val_transform

    register()
    tf = val_transform(open_clip.create_model("ternbench-tiny"))
    sources = resolve_sources([str(color_data), str(caption_data)])
    n_samples = sum(1 for s in sources for u in s.urls for _ in _raw_samples(u))
    cached = PairBatches(sources, tf, 8, seed=1, shuffle_buffer=16)
    plain = PairBatches(sources, tf, 8, seed=1, shuffle_buffer=16, cache=False)
    for _ in range(3 * n_samples // 8 + 1):  # past two epoch boundaries (batches straddle them)
        (a_img, a_txt, a_g), (b_img, b_txt, b_g) = next(cached), next(plain)
        assert a_txt == b_txt and torch.equal(a_img, b_img) and torch.equal(a_g, b_g)
    assert cached._images, "the small local data set should be cached"


def test_captions_from_txt_lines_and_from_class_templates(color_data):
    (src,) = resolve_sources([str(color_data)])
    txt = {"__u__": 0.75, "txt": b"first caption\nsecond caption\n"}
    assert caption_of(txt, src) == "second caption"
    cls = {"__u__": 0.0, "cls": b"2"}
    assert caption_of(cls, src) == "a photo of blue."
    assert caption_of({**cls, "__u__": 0.9}, src) == "a blue square."


def test_label_without_classnames_or_out_of_range_is_an_error(color_data, tmp_path):
    import shutil

    (src,) = resolve_sources([str(color_data)])
    with pytest.raises(DataError, match="label 7, outside the 4 classes"):
        caption_of({"__u__": 0.0, "cls": b"7", "__key__": "k", "__url__": "u"}, src)
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(color_data / "train" / "0.tar", bare / "0.tar")
    (src,) = resolve_sources([str(bare / "0.tar")])
    with pytest.raises(DataError, match="no classnames.txt was found"):
        caption_of(next(raw_stream([src], 0, 4)), src)


def test_corrupt_shard_and_undecodable_image_name_the_file(color_data, tmp_path):
    import webdataset as wds

    from quant.train.data import image_of

    bad = tmp_path / "bad.tar"
    bad.write_bytes((color_data / "train" / "0.tar").read_bytes()[:700])  # truncated mid-member
    (src,) = resolve_sources([str(bad)])
    with pytest.raises(DataError, match=r"cannot read training shard .*bad\.tar"):
        list(zip(range(100), raw_stream([src], 0, 4)))
    with wds.TarWriter(str(tmp_path / "junk.tar")) as w:
        w.write({"__key__": "k0", "png": b"not a png", "txt": b"x"})
    (src,) = resolve_sources([str(tmp_path / "junk.tar")])
    with pytest.raises(DataError, match=r"sample k0 of .*junk\.tar: its png image cannot be decoded"):
        image_of(next(raw_stream([src], 0, 1)))
