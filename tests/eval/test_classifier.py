import dataclasses
import json

import pytest
import torch

from vcdm.config import to_dict
from vcdm.data.mnist import load_mnist
from vcdm.errors import VcdmError
from vcdm.eval.classifier import ClassifierExtractor, accuracy
from vcdm.eval.features import FeatureExtractor
from vcdm.networks.classifier import Classifier, ClassifierConfig, classifier_input
from vcdm.stages import ClassifierTask, load_model, random_translate
from vcdm.training.checkpoint import save_export

SMALL = ClassifierConfig(channels=(8, 16, 32), feature_dim=64)
# A (8, 16, 32) net after 150 AdamW steps of 64 images (linear LR decay) reaches 0.963 on the 2k test
# images (about 5 s of one CPU core); the assertion leaves a margin for other BLAS builds.
TRAIN_STEPS, MIN_TEST_ACCURACY = 150, 0.94


def _build(cfg: ClassifierConfig, seed: int = 0) -> Classifier:
    with torch.random.fork_rng():  # module init draws from the global RNG; keep it untouched
        torch.manual_seed(seed)
        return Classifier(cfg)


def _to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1


@pytest.fixture(scope="module")
def mnist_test() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_mnist("test", limit=2000)
    return _to_float(data.images), data.labels


@pytest.fixture(scope="module")
def trained(mnist_test) -> Classifier:
    """SMALL trained with a plain AdamW loop on 5k MNIST training images."""
    train = load_mnist("train", limit=5000)
    x, y = _to_float(train.images), train.labels
    model = _build(SMALL)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    task = ClassifierTask(augment=True)
    g = torch.Generator().manual_seed(0)
    # A net this small trains faster on one thread; on a shared, busy CPU two OpenMP threads were 8x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for step in range(TRAIN_STEPS):
            for group in opt.param_groups:
                group["lr"] = 3e-3 * (1 - step / TRAIN_STEPS)
            idx = torch.randint(0, len(x), (64,), generator=g)
            loss = task.loss(model, {"image": x[idx], "label": y[idx]}, g).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def test_training_reaches_stated_test_accuracy(trained, mnist_test):
    images, labels = mnist_test
    assert accuracy(trained, images, labels, batch_size=700) >= MIN_TEST_ACCURACY


def test_extractor_predict_agrees_with_logits_and_features_have_dim(trained, mnist_test):
    images, labels = mnist_test
    ext = ClassifierExtractor(trained)
    assert isinstance(ext, FeatureExtractor) and ext.dim == 64 and ext.name.startswith("classifier:")
    with torch.no_grad():
        logits = trained(images[:300])
    pred = ext.predict(images[:300], batch_size=128)
    assert pred.dtype == torch.int64 and torch.equal(pred, logits.argmax(dim=1))
    feats = ext.features(images[:300], batch_size=128)
    assert feats.shape == (300, 64) and feats.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(feats, trained.features(images[:300]))
    # Trained features separate the classes: same-class pairs are closer than different-class pairs.
    d = torch.cdist(feats, feats)
    same = labels[:300, None] == labels[None, :300]
    assert d[same].mean() < 0.7 * d[~same].mean()
    with pytest.raises(VcdmError, match="trained on"):
        ext.features(torch.zeros(2, 3, 32, 32))


def test_export_load_round_trip_keeps_logits_and_name(trained, tmp_path):
    stage = tmp_path / "classifier"
    save_export(stage, trained, {"kind": "classifier", "net": to_dict(trained.cfg)})
    loaded, _ = load_model(stage, "classifier")
    assert loaded.cfg == SMALL
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x), trained(x))
    assert ClassifierExtractor.from_file(stage).name == ClassifierExtractor(trained).name
    assert (
        ClassifierExtractor.from_file(stage / "model.safetensors").name == ClassifierExtractor(trained).name
    )
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "model.json").write_text("{")
    (tmp_path / "junk" / "model.safetensors").write_bytes(b"nope")
    with pytest.raises(VcdmError, match="junk/model.json"):
        ClassifierExtractor.from_file(tmp_path / "junk")
    with pytest.raises(VcdmError, match="absent does not exist"):
        ClassifierExtractor.from_file(tmp_path / "absent")


def test_shapes_and_config_json_round_trip():
    model = _build(SMALL)
    x = torch.zeros(3, 1, 28, 28)
    assert model(x).shape == (3, 10) and model.features(x).shape == (3, 64)
    with pytest.raises(ValueError, match=r"expects \(B, 1, 28, 28\)"):
        model(torch.zeros(3, 1, 32, 32))
    assert ClassifierConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(SMALL)))) == SMALL
    rgb = ClassifierConfig(image_size=32, in_channels=3, num_classes=5, channels=(8, 16))
    assert _build(rgb)(torch.zeros(2, 3, 32, 32)).shape == (2, 5)


@pytest.mark.parametrize(
    ("field", "value"),
    [("channels", ()), ("channels", (8, -1)), ("channels", [8, 16]), ("image_size", 2), ("dropout", 1.0)],
)
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(VcdmError, match=f"ClassifierConfig.{field}"):
        ClassifierConfig(**{field: value})
    with pytest.raises(VcdmError, match="unknown fields"):
        ClassifierConfig.from_dict({"widths": (8,)})


def test_loss_is_deterministic_given_the_generator():
    model = _build(SMALL).train()
    batch = {
        "image": torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(9)) * 2 - 1,
        "label": torch.arange(6),
    }
    task = ClassifierTask(augment=True)

    def loss(seed: int) -> torch.Tensor:
        return task.loss(model, batch, torch.Generator().manual_seed(seed))

    a, b, c = loss(0), loss(0), loss(1)
    assert a.shape == (6,) and torch.equal(a, b) and not torch.equal(a, c)
    # Without a generator no dropout is applied: train and eval modes agree.
    with torch.no_grad():
        torch.testing.assert_close(model(batch["image"]), model.eval()(batch["image"]))
    with pytest.raises(VcdmError, match="label"):
        task.loss(model, {"image": batch["image"]}, torch.Generator())


def test_random_translate_shifts_by_at_most_max_shift():
    x = torch.full((64, 1, 12, 12), -1.0)
    x[:, :, 6, 5] = 1.0
    out = random_translate(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    pos = out.flatten(1).argmax(dim=1)
    rows, cols = pos // 12, pos % 12
    assert (out == 1.0).flatten(1).sum(dim=1).eq(1).all()  # content moved, not duplicated
    assert ((rows - 6).abs() <= 2).all() and ((cols - 5).abs() <= 2).all()
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 15  # most of the 25 offsets occur
    assert torch.equal(random_translate(x, 0, torch.Generator()), x)


def test_noise_conditioned_classifier_uses_the_noise_level():
    cfg = dataclasses.replace(SMALL, noise_conditioned=True)
    model = _build(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # FiLM layers start at zero; give them weights to see the noise level act
        for stage in model.stages:
            stage.film.weight.copy_(0.1 * torch.randn(stage.film.weight.shape, generator=g))
    x = torch.rand(2, 1, 28, 28, generator=g) * 2 - 1
    sigma = torch.tensor([0.1, 0.1])
    x_in, c_noise = classifier_input(x, sigma)
    torch.testing.assert_close(x_in, x / (0.1**2 + 0.25) ** 0.5)
    torch.testing.assert_close(c_noise, sigma.log() / 4)
    with torch.no_grad():
        assert not torch.allclose(model(x_in, c_noise), model(x_in, c_noise + 1))
    with pytest.raises(ValueError, match="needs c_noise"):
        model(x_in)
    with pytest.raises(ValueError, match="noise_conditioned=False"):
        _build(SMALL)(x_in, c_noise)
    task = ClassifierTask(noise=True)
    batch = {"image": x, "label": torch.tensor([3, 7])}
    a = task.loss(model, batch, torch.Generator().manual_seed(5))
    assert torch.isfinite(a).all() and torch.equal(
        a, task.loss(model, batch, torch.Generator().manual_seed(5))
    )
    with pytest.raises(VcdmError, match="noise-conditioned"):
        ClassifierExtractor(model)
