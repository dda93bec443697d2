"""Text to image (DALL-E 2's unCLIP, and GLIDE): the text-conditioned prior p(y | caption), decoders that see the
caption's CLIP text embedding, prompts through the Pipeline, the best-of-k prior, and the checks on prompts and
on the run's embeddings."""

import pytest
import torch
from fake_data import captioned
from fake_runs import text_cfg

from vcdm.config import SampleConfig, apply_overrides, preset
from vcdm.errors import VcdmError
from vcdm.guidance import classifier_free
from vcdm.networks import PriorConfig, PriorTransformer, UNet, UNetConfig
from vcdm.pipeline import Pipeline
from vcdm.runs import RunDir
from vcdm.stages import compute_embeddings, load_model, train_stage
from vcdm.stages.text import TextEncoder, clip_text_shape


@pytest.fixture(scope="module")
def data():
    return captioned()


@pytest.fixture(scope="module")
def run(tmp_path_factory, data):
    """clip -> clip-trained embeddings -> text prior, embedding+text decoder, GLIDE baseline."""
    path = tmp_path_factory.mktemp("text_run")
    cfg = text_cfg()
    train_stage("clip", path, cfg, data, progress=False)
    compute_embeddings(path, cfg, data, progress=False)
    for stage in ("prior", "decoder", "baseline"):
        train_stage(stage, path, cfg, data, progress=False)
    return path


def test_the_stages_take_their_text_sizes_from_the_runs_clip(run):
    shape = clip_text_shape(run)
    assert shape == {"length": 8, "width": 32, "dim": 16}
    prior, meta = load_model(RunDir(run).stage("prior"), "prior")
    assert (meta["net"]["text_length"], meta["net"]["text_width"], meta["net"]["text_dim"]) == (8, 32, 16)
    _, dec = load_model(RunDir(run).stage("decoder"), "image")
    _, glide = load_model(RunDir(run).stage("baseline"), "image")
    assert dec["net"]["text_dim"] == glide["net"]["text_dim"] == 16
    assert dec["net"]["emb_dim"] == 16 and glide["net"]["emb_dim"] == 0 and glide["condition"] == "text"


def test_text_encoder_gives_padded_tokens_mask_and_the_clips_text_embedding(run):
    enc = TextEncoder.from_run(run)
    c = enc.encode(["red square", "a blue dot", "red square"])
    assert c["text_tokens"].shape == (3, 8, 32) and c["text_mask"].dtype == torch.bool
    torch.testing.assert_close(
        c["text_emb"], enc.clip.encode_text(["red square", "a blue dot", "red square"])
    )
    assert bool((c["text_tokens"][~c["text_mask"]] == 0).all())
    torch.testing.assert_close(c["text_tokens"][0], c["text_tokens"][2])
    with pytest.raises(VcdmError, match="empty prompt"):
        enc.encode(["  "])
    with pytest.raises(VcdmError, match="at most 8"):
        enc.encode(["red square " * 10])


def _tiny_text_prior(seed=0):
    torch.manual_seed(seed)
    cfg = PriorConfig(emb_dim=6, width=16, depth=1, heads=2, text_length=5, text_width=12, text_dim=4)
    net = PriorTransformer(cfg)
    torch.nn.init.normal_(net.out.weight, std=0.1)  # zero-initialised: make the output depend on the input
    return net


def _text_cond(b, gen):
    mask = torch.arange(5)[None] < torch.tensor([2, 5, 3])[:b, None]
    return {"text_tokens": torch.randn(b, 5, 12, generator=gen) * mask[..., None], "text_mask": mask,
            "text_emb": torch.randn(b, 4, generator=gen)}  # fmt: skip


def test_text_prior_reads_the_caption_masks_padding_and_has_a_learned_null():
    net = _tiny_text_prior().eval()
    gen = torch.Generator().manual_seed(1)
    y, c_noise, cond = torch.randn(3, 6, generator=gen), torch.randn(3, generator=gen), _text_cond(3, gen)
    out = net(y, c_noise, cond)
    # padding is never attended to: changing the padded tokens changes nothing
    noisy = dict(cond, text_tokens=cond["text_tokens"] + 5.0 * (~cond["text_mask"])[..., None])
    torch.testing.assert_close(net(y, c_noise, noisy), out)
    # the caption matters, and a dropped caption equals no caption at all (the learned null sequence)
    other = dict(cond, text_emb=cond["text_emb"].flip(0))
    assert not torch.allclose(net(y, c_noise, other), out)
    null = dict(cond, null=torch.ones(3, dtype=torch.bool))
    torch.testing.assert_close(net(y, c_noise, null), net(y, c_noise, None))
    with pytest.raises(VcdmError, match="text_tokens"):
        net(y, c_noise, dict(cond, text_tokens=cond["text_tokens"][:, :4]))


def test_text_prior_with_guidance_weight_one_is_the_conditional_prior_and_guidance_mixes_the_null():
    net = _tiny_text_prior().eval()
    d = lambda x, s, c: net(x, s, c)  # noqa: E731
    gen = torch.Generator().manual_seed(2)
    y, s, cond = torch.randn(3, 6, generator=gen), torch.rand(3, generator=gen), _text_cond(3, gen)
    torch.testing.assert_close(classifier_free(d, 1.0)(y, s, cond), d(y, s, cond), rtol=0, atol=0)
    c, u = d(y, s, cond), d(y, s, None)
    torch.testing.assert_close(classifier_free(d, 3.0)(y, s, cond), u + 3.0 * (c - u))


def _sub(cond, rows):
    return {k: v[rows] for k, v in cond.items()}


def test_text_prior_trims_padding_and_a_row_depends_only_on_itself_up_to_rounding():
    torch.manual_seed(0)
    cfg = PriorConfig(emb_dim=6, width=16, depth=2, heads=2, text_length=12, text_width=12, text_dim=4)
    net = PriorTransformer(cfg).eval()
    torch.nn.init.normal_(net.out.weight, std=0.1)
    gen = torch.Generator().manual_seed(3)
    mask = torch.arange(12)[None] < torch.tensor([2, 3, 11, 12, 2])[:, None]  # the last two: full and short
    cond = {"text_tokens": torch.randn(5, 12, 12, generator=gen) * mask[..., None], "text_mask": mask,
            "text_emb": torch.randn(5, 4, generator=gen)}  # fmt: skip
    y, c_noise = torch.randn(5, 6, generator=gen), torch.randn(5, generator=gen)
    tight = dict(rtol=1e-5, atol=1e-6)
    for null in (torch.zeros(5, dtype=torch.bool), torch.tensor([False, True, False, False, True])):
        c = dict(cond, null=null)
        # trimmed (forward) == untrimmed (every position through the blocks), with or without dropped captions
        torch.testing.assert_close(net(y, c_noise, c), net.read(*net.tokens(y, c_noise, c)), **tight)
    # a caption's output is the same alone, beside a short caption, a long one or a dropped one
    alone = net(y[:1], c_noise[:1], _sub(cond, [0]))
    for partner in (1, 2, 3):
        pair = net(y[[0, partner]], c_noise[[0, partner]], _sub(cond, [0, partner]))
        torch.testing.assert_close(pair[:1], alone, **tight)
    # two short captions run together on 3 + 1 + 4 tokens (their longest caption, the pooled embedding, the 4
    # others); beside a dropped caption, apart from its 12 + 1 null tokens + 4 (groups of up to 2^k tokens)
    seen = []
    hook = net.blocks[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1]))
    net(y[:2], c_noise[:2], _sub(cond, [0, 1]))
    net(y[:2], c_noise[:2], dict(_sub(cond, [0, 1]), null=torch.tensor([False, True])))
    hook.remove()
    assert seen == [8, 7, 17]
    # training: gradients reach the text layers through both groups
    net.train()
    net(y, c_noise, dict(cond, null=torch.tensor([False, True, False, False, False]))).sum().backward()
    assert all(p.grad is not None and bool(p.grad.any()) for n, p in net.named_parameters() if "text" in n)


def test_a_prior_without_text_builds_and_initialises_as_before():
    torch.manual_seed(0)
    a = PriorTransformer(PriorConfig(emb_dim=6, width=16, depth=1, heads=2))
    assert not any(k.startswith("text") for k in a.state_dict())
    torch.manual_seed(0)
    b = PriorTransformer(
        PriorConfig(emb_dim=6, width=16, depth=1, heads=2, text_length=3, text_width=4, text_dim=2)
    )
    shared = {k: v for k, v in b.state_dict().items() if not k.startswith("text")}
    assert shared.keys() == a.state_dict().keys()
    assert all(torch.equal(v, a.state_dict()[k]) for k, v in shared.items())
    with pytest.raises(VcdmError, match="text_length"):
        PriorConfig(text_length=3)


def test_unet_reads_the_text_embedding_through_the_condition_vector():
    torch.manual_seed(0)
    net = UNet(
        UNetConfig(image_size=8, in_channels=3, base_channels=8, channel_mults=(1, 2), text_dim=4)
    ).eval()
    for p in net.parameters():  # zero-initialised layers: make the output depend on the input
        torch.nn.init.normal_(p, std=0.1)
    x, c = torch.randn(2, 3, 8, 8), torch.zeros(2)
    t = torch.randn(2, 4)
    a, b = net(x, c, {"text_emb": t}), net(x, c, {"text_emb": t.flip(0)})
    assert not torch.allclose(a, b)
    torch.testing.assert_close(net(x, c, {"text_emb": t, "null": torch.ones(2, dtype=torch.bool)}), net(x, c))


def test_pipeline_samples_from_prompts_and_a_sample_depends_only_on_prompt_and_seed(run):
    pipe = Pipeline.from_run(run, "decoder")
    assert pipe.text_conditional and pipe.text is not None
    cfg = SampleConfig(num_steps=3, prior_num_steps=3, batch_size=2, prior_guidance=2.0, guidance=1.5)
    out = pipe([5, 6, 7], cfg, prompts=["red square", "blue dot", "red square"])
    assert out.images.shape == (3, 3, 16, 16) and out.embeddings.shape == (3, 16)
    again = pipe([7, 5], replace_batch(cfg, 1), prompts=["red square", "red square"])
    torch.testing.assert_close(again.images[0], out.images[2], rtol=0, atol=0)
    torch.testing.assert_close(again.images[1], out.images[0], rtol=0, atol=0)
    other = pipe([5], cfg, prompts="blue dot")
    assert not torch.equal(other.embeddings[0], out.embeddings[0])
    with pytest.raises(VcdmError, match="give prompts"):
        pipe([0], cfg)
    with pytest.raises(VcdmError, match="empty prompt"):
        pipe([0], cfg, prompts=[""])
    with pytest.raises(VcdmError, match="2 prompts for 1 seeds"):
        pipe([0], cfg, prompts=["a", "b"])


def replace_batch(cfg, b):
    from dataclasses import replace

    return replace(cfg, batch_size=b)


def test_a_prompts_prior_sample_is_the_same_beside_a_long_or_a_short_caption(run):
    pipe = Pipeline.from_run(run, None)
    cfg = SampleConfig(prior_num_steps=3, batch_size=2, prior_guidance=2.0)
    short, long = "red", "a red bar"
    mask = pipe.text.encode(["red dot", short, long])["text_mask"].sum(1).tolist()
    assert mask[1] < mask[0] < mask[2]
    y = [pipe.sample([3, 9], cfg, until="prior", prompts=["red dot", p])["prior"][0] for p in (short, long)]
    alone = pipe.sample([3], cfg, until="prior", prompts="red dot")["prior"][0]
    torch.testing.assert_close(y[0], alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y[1], alone, rtol=1e-5, atol=1e-5)


def test_best_of_k_keeps_the_candidate_closest_to_the_caption(run):
    pipe = Pipeline.from_run(run, None)
    cfg = SampleConfig(prior_num_steps=3, batch_size=8)
    one = pipe.sample([3, 4], cfg, until="prior", prompts="green bar")["prior"]
    k4 = pipe.sample([3, 4], replace_candidates(cfg, 4), until="prior", prompts="green bar")["prior"]
    text = pipe.text.encode(["green bar"])["text_emb"]

    def cos(y):
        return torch.nn.functional.cosine_similarity(pipe.stats.denormalize(y), text)

    assert bool((cos(k4) >= cos(one) - 1e-6).all())
    # a candidate set contains the plain sample, so k = 1 is the plain prior
    k1 = pipe.sample([3, 4], replace_candidates(cfg, 1), until="prior", prompts="green bar")["prior"]
    torch.testing.assert_close(k1, one, rtol=0, atol=0)


def replace_candidates(cfg, k):
    from dataclasses import replace

    return replace(cfg, prior_candidates=k)


def test_glide_arm_samples_from_prompts_without_a_prior(run):
    pipe = Pipeline.from_run(run, "baseline")
    assert "prior" not in pipe.components and pipe.condition == "text"
    out = pipe([0, 1], SampleConfig(num_steps=3, guidance=2.0), prompts=["red dot", "blue bar"])
    assert out.images.shape == (2, 3, 16, 16) and out.embeddings is None


def test_text_stages_need_the_clip_and_clip_embeddings(tmp_path, data):
    with pytest.raises(VcdmError, match="vcdm train clip"):
        train_stage("baseline", tmp_path / "a", text_cfg(), data, progress=False)
    path = tmp_path / "b"
    cfg = text_cfg("embedder.kind=learned")
    train_stage("clip", path, cfg, data, progress=False)
    train_stage("embedder", path, cfg, data, progress=False)
    compute_embeddings(path, cfg, data, progress=False)
    with pytest.raises(VcdmError, match="embedder.kind 'clip-trained'"):
        train_stage("prior", path, cfg, data, progress=False)


def test_prior_condition_is_validated_and_class_conditional_still_maps_to_label():
    with pytest.raises(VcdmError, match="prior.condition must be one of"):
        apply_overrides(preset("tiny"), ["prior.condition=caption"])
    with pytest.raises(VcdmError, match="prior.class_conditional"):
        apply_overrides(preset("tiny"), ["prior.condition=text", "prior.class_conditional=true"])
    assert apply_overrides(preset("tiny"), ["prior.class_conditional=true"]).prior.uses_label
    assert apply_overrides(preset("tiny"), ["prior.condition=label"]).prior.uses_label
    with pytest.raises(VcdmError, match="sample.prior_candidates"):
        SampleConfig(prior_candidates=0)


def test_text_diff_keeps_x_T_and_rotates_y_toward_the_caption_change(run, data):
    from vcdm.editing import embed, load_pipeline, text_diff, text_direction

    pipe = load_pipeline(run)
    seen = []
    decoder = pipe.components["decoder"].denoiser

    def recording(x, sigma, cond):
        seen.append(cond)
        return decoder(x, sigma, cond)

    pipe.components["decoder"].denoiser = recording
    images = data.as_float()[:2]
    edits = text_diff(pipe, images, "red square", "blue square", [0.0, 0.0, 0.6], num_steps=3)
    assert edits.shape == (2, 3, 3, 16, 16)
    torch.testing.assert_close(edits[:, 0], edits[:, 1], rtol=0, atol=0)  # deterministic (DDIM, eta 0)
    # the decoder reads y rotated toward the text diff, and no caption (zeros) beside it
    y = seen[-1]["emb"].reshape(2, 3, -1)
    torch.testing.assert_close(y[:, 0], embed(pipe, images))
    assert bool((seen[-1]["text_emb"] == 0).all())
    z_d = text_direction(pipe, "red square", "blue square")
    cos = torch.nn.functional.cosine_similarity(pipe.stats.denormalize(y), z_d, dim=-1)  # (2, 3)
    assert bool((cos[:, 2] > cos[:, 0] + 0.1).all())
    with pytest.raises(VcdmError, match=r"in \[0, 1\]"):
        text_diff(pipe, images, "red square", "blue square", [1.5], num_steps=3)
    with pytest.raises(VcdmError, match="same text embedding"):
        text_diff(pipe, images, "red square", "red  square", [0.5], num_steps=3)
    glide = Pipeline.from_run(run, "baseline")
    with pytest.raises(VcdmError, match="decoder conditioned on it"):
        text_diff(glide, images, "red square", "blue square", [0.5], num_steps=3)
