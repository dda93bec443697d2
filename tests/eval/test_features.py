import pytest
import torch

from vcdm.config import to_dict
from vcdm.errors import VcdmError
from vcdm.eval.classifier import ClassifierExtractor
from vcdm.eval.features import FeatureExtractor, load_extractor
from vcdm.networks.classifier import Classifier, ClassifierConfig
from vcdm.training.checkpoint import save_export


def test_unknown_kind_lists_the_allowed_ones():
    with pytest.raises(VcdmError, match="'clip': expected one of inception, classifier"):
        load_extractor("clip", "x.pth")


def test_inception_needs_a_local_file_and_names_the_option(tmp_path):
    with pytest.raises(VcdmError, match="--inception.*never downloads"):
        load_extractor("inception", None)
    with pytest.raises(VcdmError, match=r"--inception.*nope\.pth does not exist"):
        load_extractor("inception", str(tmp_path / "nope.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(VcdmError, match=r"junk\.pth"):
        load_extractor("inception", str(junk))


def test_classifier_kind_loads_an_export(tmp_path):
    with pytest.raises(VcdmError, match="--classifier"):
        load_extractor("classifier", None)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Classifier(ClassifierConfig(channels=(8, 16), feature_dim=16))
    path = tmp_path / "classifier"
    save_export(path, model, {"kind": "classifier", "net": to_dict(model.cfg)})
    ext = load_extractor("classifier", str(path))
    assert isinstance(ext, ClassifierExtractor) and isinstance(ext, FeatureExtractor)
    assert ext.dim == 16 and ext.name == ClassifierExtractor(model).name
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    feats = ext.features(x, batch_size=2)
    assert feats.shape == (5, 16) and feats.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(feats, model.features(x))
    assert ext.features(x[:0]).shape == (0, 16)
