"""bench.tasks: zero-shot tasks through clip_benchmark's real builder and metrics, checked against
an independent computation; honest precision (no autocast, inputs at the model's dtype)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from bench.tasks import AUTO, TASKS, TaskContext, UnknownTaskError, get_task, valid_task_names

SIZES = dict(train=4, test=24, retrieval_test=12, shard_size=10)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def built():
    from bench.models import build_model

    torch.manual_seed(0)
    return build_model("ternbench-tiny")


def _data(root, name, transform):
    from clip_benchmark.datasets.builder import build_dataset

    from bench.datasets.registry import load_registry

    entry = load_registry().get(name)
    ds = build_dataset(name, root=str(root / entry.dir_name), transform=transform, split="test", task=entry.task)
    return entry, SimpleNamespace(dataset=ds, classnames=ds.classes, templates=ds.templates, name=name)


def _ctx(built, entry, data, model=None, dtype=torch.float32, batch_size=5):
    return TaskContext(model=model or built.model, tokenizer=built.tokenizer, dtype=dtype, device="cpu",
                       model_info=built.info, entry=entry, data=data, batch_size=batch_size, progress=False)


def _samples(data):
    return list(data.dataset)


def test_registry_and_unknown_task():
    assert set(TASKS) == {"zeroshot_classification", "zeroshot_retrieval", "efficiency"}
    assert valid_task_names()[0] == AUTO
    with pytest.raises(UnknownTaskError, match="did you mean 'zeroshot_retrieval'.*valid: auto"):
        get_task("zeroshot_retreival")


@torch.no_grad()
def test_classification_matches_independent_computation(mini_root, built):
    entry, data = _data(mini_root, "wds/mini/shapes", built.preprocess)
    res = get_task("zeroshot_classification").run(_ctx(built, entry, data))
    assert res.main_metric == "acc1"
    assert set(res.metrics) == {"acc1", "acc5", "mean_per_class_recall"}

    model, tok = built.model, built.tokenizer
    weights = []
    for c in data.classnames:
        emb = F.normalize(model.encode_text(tok([t.format(c=c) for t in data.templates])), dim=-1).mean(0)
        weights.append(emb / emb.norm())
    weights = torch.stack(weights, 1)
    samples = _samples(data)
    images = torch.stack([s[0] for s in samples])
    labels = torch.tensor([int(s[1]) for s in samples])
    logits = F.normalize(model.encode_image(images), dim=-1) @ weights
    acc1 = (logits.argmax(1) == labels).float().mean().item()
    top5 = logits.topk(5, dim=1).indices
    acc5 = (top5 == labels[:, None]).any(1).float().mean().item()
    assert res.metrics["acc1"] == pytest.approx(acc1, abs=1e-6)
    assert res.metrics["acc5"] == pytest.approx(acc5, abs=1e-6)
    assert res.details["n_classes"] == len(data.classnames) and res.details["amp"] is False


@torch.no_grad()
def test_retrieval_matches_independent_computation(mini_root, built):
    entry, data = _data(mini_root, "wds/mini/captions", built.preprocess)
    res = get_task("zeroshot_retrieval").run(_ctx(built, entry, data, batch_size=4))
    assert res.main_metric == "mean_recall@1"
    for k in (1, 5, 10):
        m = res.metrics
        assert m[f"mean_recall@{k}"] == pytest.approx((m[f"image_retrieval_recall@{k}"]
                                                       + m[f"text_retrieval_recall@{k}"]) / 2)
    samples = _samples(data)
    images = torch.stack([s[0] for s in samples])
    texts = [(i, t) for i, s in enumerate(samples) for t in s[1]]
    img = F.normalize(built.model.encode_image(images), dim=-1)
    txt = F.normalize(built.model.encode_text(built.tokenizer([t for _, t in texts])), dim=-1)
    owner = torch.tensor([i for i, _ in texts])
    scores = txt @ img.T
    # image retrieval R@1: per text, is its own image ranked first
    ir1 = (scores.argmax(1) == owner).float().mean().item()
    # text retrieval R@1: per image, is the top text one of its captions
    tr1 = (owner[scores.argmax(0)] == torch.arange(len(samples))).float().mean().item()
    assert res.metrics["image_retrieval_recall@1"] == pytest.approx(ir1, abs=1e-6)
    assert res.metrics["text_retrieval_recall@1"] == pytest.approx(tr1, abs=1e-6)


class _Spy(torch.nn.Module):
    """Wraps a model and records the input dtype and autocast state of every encode call."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.seen = []

    def encode_image(self, x, **kw):
        self.seen.append(("image", x.dtype, torch.is_autocast_enabled("cpu")))
        return self.inner.encode_image(x, **kw)

    def encode_text(self, t, **kw):
        self.seen.append(("text", t.dtype, torch.is_autocast_enabled("cpu")))
        return self.inner.encode_text(t, **kw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_precision_is_the_precision_run(mini_root, built, dtype):
    import copy

    model = copy.deepcopy(built.model).to(dtype)
    spy = _Spy(model)
    entry, data = _data(mini_root, "wds/mini/colors", built.preprocess)
    res = get_task("zeroshot_classification").run(_ctx(built, entry, data, model=spy, dtype=dtype, batch_size=12))
    assert 0.0 <= res.metrics["acc1"] <= 1.0
    images = [s for s in spy.seen if s[0] == "image"]
    assert images and all(d == dtype for _, d, _ in images)  # images cast to the model's dtype
    assert not any(amp for _, _, amp in spy.seen)  # clip_benchmark's autocast stayed off


def test_classification_without_classnames_fails_clearly(mini_root, built):
    entry, data = _data(mini_root, "wds/mini/shapes", built.preprocess)
    data.classnames = None
    with pytest.raises(ValueError, match="no class names or templates"):
        get_task("zeroshot_classification").run(_ctx(built, entry, data))


def test_retrieval_on_fewer_images_than_k(mini_root, built):
    entry, data = _data(mini_root, "wds/mini/captions", built.preprocess)
    data.n_samples = SIZES["retrieval_test"]  # 12 images: recall@1 and @5 exist, @10 too
    res = get_task("zeroshot_retrieval").run(_ctx(built, entry, data, batch_size=4))
    assert "mean_recall@10" in res.metrics
    data.n_samples = 8  # pretend fewer than 10: recall@10 is left out instead of failing
    data.dataset = data.dataset.slice(8)  # webdataset's own way to take the first 8 samples
    res = get_task("zeroshot_retrieval").run(_ctx(built, entry, data, batch_size=4))
    assert "mean_recall@10" not in res.metrics and "mean_recall@5" in res.metrics
