import json

import pytest

from vcdm.config import RunConfig, apply_overrides, from_dict, load_config, preset, to_dict
from vcdm.errors import VcdmError


@pytest.mark.parametrize("name", ["mnist", "tiny"])
def test_presets_round_trip_through_json(name):
    cfg = preset(name)
    assert from_dict(RunConfig, json.loads(json.dumps(to_dict(cfg)))) == cfg


def test_overrides_parse_json_values_and_revalidate():
    cfg = apply_overrides(preset("tiny"), ["decoder.train.lr=0.01", "decoder.net.channel_mults=[1,2,2]",
                                           "data.source=some/folder", "embedder.path=null"])  # fmt: skip
    assert cfg.decoder.train.lr == 0.01 and cfg.decoder.net.channel_mults == (1, 2, 2)
    assert cfg.data.source == "some/folder" and cfg.embedder.path is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "decoder.trian.lr=1",
            "unknown config field 'decoder.trian'; allowed fields: cond_drop_prob, condition",
        ),
        ("decoder.condition=foo", "decoder.condition must be one of"),
        ("decoder.train.precision=fp8", "decoder.train.precision must be one of ('fp32', 'bf16', 'fp16')"),
        ("decoder.train.batch_size=1.5", "decoder.train.batch_size must be an integer"),
        ("prior.class_conditional=3", "prior.class_conditional must be true or false"),
        ("sample.sampler=lms", "sample.sampler must be one of"),
        ("decoder.train.lr", "must look like field.path=value"),
        ("decoder.train.lr.x=1", "has no sub-fields"),
    ],
)
def test_bad_overrides_name_the_field(override, message):
    with pytest.raises(VcdmError) as e:
        apply_overrides(preset("tiny"), [override])
    assert message in str(e.value)


def test_config_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text('{"decoder": {"net": {"colour": 3}}}')
    with pytest.raises(VcdmError, match=r"c.json: unknown config field 'decoder.net.colour'"):
        load_config(bad)
    bad.write_text("{oops")
    with pytest.raises(VcdmError, match="c.json: not valid JSON"):
        load_config(bad)
    partial = tmp_path / "p.json"
    partial.write_text('{"decoder": {"train": {"lr": 0.005}}}')
    cfg = load_config(partial)
    assert (
        cfg.decoder.train.lr == 0.005 and cfg.decoder.train.batch_size == RunConfig().decoder.train.batch_size
    )
