"""Latent diffusion end to end on a tiny RGB dataset through the CLI: embedder, embeddings, the autoencoder, the
prior, a two-stage decoder and a single-stage baseline in latent space; then sampling (decoded images of the
dataset's shape), inversion through the encoder, and the errors that name the field. Then a latent Palette model
(`vcdm edit inpaint`, and RePaint on the latent baseline) and a cascade whose upsampler is latent."""

import json

import numpy as np
import pytest
import torch
from fake_data import blob_array

from vcdm.cli import main
from vcdm.config import apply_overrides, preset
from vcdm.data import ImageData
from vcdm.editing import invert, load_pipeline, psnr, reconstruct
from vcdm.errors import VcdmError
from vcdm.pipeline import Pipeline
from vcdm.stages import resolve_for_data

AE = ["--set=autoencoder.net.base_channels=8", "--set=autoencoder.net.latent_channels=3",
      "--set=autoencoder.train.batch_size=16", "--set=autoencoder.disc_start_nimg=32",
      "--set=autoencoder.disc_channels=8", "--set=autoencoder.train.total_nimg=64"]  # fmt: skip
LATENT = ["--set=decoder.space=latent", "--set=baseline.space=latent", "--set=decoder.diffusion.sigma_data=1.0",
          "--set=baseline.diffusion.sigma_data=1.0", *AE]  # fmt: skip
BUDGET = [f"--set={s}.train.total_nimg=64" for s in ("embedder", "prior", "decoder", "baseline")]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("latent")
    np.savez(root / "blobs.npz", images=blob_array())
    run = root / "run"
    first = [str(run), "--preset", "tiny", "--no-progress", f"--set=data.source={root / 'blobs.npz'}", *LATENT,
             *BUDGET]  # fmt: skip
    assert main(["train", "embedder", *first]) == 0
    assert main(["embed", str(run), "--no-progress"]) == 0
    for stage in ("autoencoder", "prior", "decoder", "baseline"):
        assert main(["train", stage, str(run), "--no-progress"]) == 0
    return run


def test_latent_stages_train_on_the_autoencoders_latents(run):
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["decoder"]["net"]["image_size"] == 4 and cfg["decoder"]["net"]["in_channels"] == 3  # 16 / f=4
    meta = json.loads((run / "decoder" / "model.json").read_text())
    ae = json.loads((run / "autoencoder" / "model.json").read_text())
    assert meta["space"] == "latent" and meta["latent"]["image_shape"] == [3, 16, 16]
    assert meta["latent"]["scale_factor"] == ae["scale_factor"]  # reused from the export, not measured again


@pytest.mark.parametrize("stage", ["decoder", "baseline"])
def test_latent_stages_sample_decoded_images_of_the_datasets_shape(run, tmp_path, stage):
    pipe = Pipeline.from_run(run, stage)
    assert pipe.latent_shape == (3, 4, 4) and pipe.image_shape == pipe.output_shape == (3, 16, 16)
    out = pipe([0, 1, 2])
    assert out.images.shape == (3, 3, 16, 16) and out.images.abs().max() <= 1
    # a seed's image does not depend on its batch
    torch.testing.assert_close(pipe([1]).images[0], out.images[1], atol=1e-5, rtol=0)
    assert main(["sample", str(run), "--stage", stage, "--num", "2", "--out", str(tmp_path / stage),
                 "--no-progress"]) == 0  # fmt: skip
    assert len(list((tmp_path / stage).glob("*.png"))) == 3  # two samples and the grid


def test_inversion_goes_through_the_encoder_and_decoding_reconstructs(run):
    pipe = load_pipeline(run)
    images = torch.from_numpy(blob_array()[:4]).permute(0, 3, 1, 2).float() / 127.5 - 1
    y, x_T = invert(pipe, images, num_steps=20, fixed_point_iters=2)
    assert x_T.shape == (4, 3, 4, 4)  # the latent's shape
    through_ae = pipe.latent_space.decode(pipe.latent_space.encode(images))
    out = reconstruct(pipe, y, x_T, num_steps=20)
    assert out.shape == images.shape
    # DDIM inversion is near-exact in latent space: decoding gives the autoencoder's reconstruction back
    assert psnr(out, through_ae).min() > 30


def test_errors_name_the_field(run, tmp_path):
    with pytest.raises(VcdmError, match="decoder.space"):
        apply_overrides(preset("tiny"), ["decoder.space=voxel"])
    data = ImageData(torch.zeros(2, 3, 18, 18, dtype=torch.uint8), None, (), "x")
    cfg = apply_overrides(preset("tiny"), ["decoder.space=latent"])
    with pytest.raises(
        VcdmError, match=r"decoder.image_size must be a multiple of autoencoder.net.factor \(4\)"
    ):
        resolve_for_data(cfg, data, tmp_path)
    # a decoder whose autoencoder was retrained is refused rather than decoded with the wrong weights
    meta_path = run / "autoencoder" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(meta | {"scale_factor": meta["scale_factor"] * 2}))
    try:
        with pytest.raises(VcdmError, match="not the autoencoder this decoder was trained on"):
            Pipeline.from_run(run, "decoder")
    finally:
        meta_path.write_text(json.dumps(meta))


def test_cli_latent_file_of_a_latent_decoder_is_accepted(run, tmp_path, capsys):
    from vcdm.data import save_images

    pngs = [
        str(p) for p in save_images(torch.from_numpy(blob_array()[:1]).permute(0, 3, 1, 2), tmp_path, ["a"])
    ]
    assert main(["edit", "invert", str(run), *pngs, "--steps", "8", "--out", str(tmp_path / "inv")]) == 0
    latent = tmp_path / "inv" / "latent.safetensors"
    assert main(["edit", "variations", str(run), "--latent", str(latent), "--num", "2",
                 "--out", str(tmp_path / "var")]) == 0  # fmt: skip
    assert "wrote 2 variations" in capsys.readouterr().out


# ---- the upsampler and Palette in latent space, through the CLI ----


@pytest.fixture(scope="module")
def palette_run(run):
    """The latent run with a latent Palette model for inpainting (the run's f = 4 autoencoder)."""
    assert main(["train", "palette", str(run), "--no-progress", "--set=palette.space=latent",
                 "--set=palette.diffusion.sigma_data=1.0", "--set=palette.train.total_nimg=64"]) == 0  # fmt: skip
    return run


@pytest.mark.parametrize("method", ["palette", "repaint"])
def test_cli_inpaint_with_a_latent_palette_model_or_repaint_on_a_latent_decoder(palette_run, tmp_path, method,
                                                                               capsys):  # fmt: skip
    from PIL import Image

    from vcdm.data import save_images
    from vcdm.data.images import load_pngs

    image = save_images(torch.from_numpy(blob_array()[:1]).permute(0, 3, 1, 2), tmp_path, ["a"])[0]
    mask = np.zeros((16, 16), np.uint8)
    mask[4:10, 6:12] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / method
    argv = ["edit", "inpaint", str(palette_run), str(image), "--mask", str(tmp_path / "mask.png"), "--num", "2",
            "--steps", "3", "--method", method, "--out", str(out)]  # fmt: skip
    if method == "repaint":  # RePaint on the latent baseline's latents, the mask max-pooled to the 4x4 grid
        argv += ["--stage", "baseline", "--resamplings", "2", "--jump-length", "2"]
    assert main(argv) == 0
    assert f"wrote 2 outputs ({method})" in capsys.readouterr().out
    original, filled = load_pngs([image])[0], load_pngs([out / "seed000001.png"])[0]
    keep = torch.from_numpy(mask == 0)
    assert filled.shape == (3, 16, 16) and torch.equal(filled[:, keep], original[:, keep])


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    """A cascade whose top is latent: a pixel baseline at 8x8, a latent upsampler 8 -> 16 on an f = 2 autoencoder
    (8x8 latents: the low-res image beside them at equal size, as in LDM-SR)."""
    root = tmp_path_factory.mktemp("latent-cascade")
    np.savez(root / "blobs.npz", images=blob_array())
    run = root / "run"
    first = [str(run), "--preset", "tiny", "--no-progress", f"--set=data.source={root / 'blobs.npz'}",
             "--set=autoencoder.net.factor=2", *AE, "--set=baseline.image_size=8",
             "--set=baseline.train.total_nimg=64", "--set=upsampler.low_res=8", "--set=upsampler.space=latent",
             "--set=upsampler.diffusion.sigma_data=1.0", "--set=upsampler.train.total_nimg=64"]  # fmt: skip
    assert main(["train", "autoencoder", *first]) == 0
    for stage in ("baseline", "upsampler"):
        assert main(["train", stage, str(run), "--no-progress"]) == 0
    return run


def test_cli_latent_upsampler_cascade_samples_and_upsamples(cascade, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "cascade"
    assert main(["sample", str(cascade), "--stage", "baseline", "--num", "2", "--out", str(out), "--no-progress",
                 "--upsampler-steps", "3", "--steps", "3"]) == 0  # fmt: skip
    assert "2 16x16 samples" in capsys.readouterr().out
    assert Image.open(out / "000000.png").size == (16, 16)
    assert Image.open(out / "low_res" / "000000.png").size == (8, 8)
    up = tmp_path / "up"
    assert main(["upsample", str(cascade), str(out / "low_res" / "000000.png"), "--steps", "3",
                 "--out", str(up), "--no-progress"]) == 0  # fmt: skip
    assert Image.open(up / "00_000000.png").size == (16, 16)
