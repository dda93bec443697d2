"""Demo experiments: train (reusing stages already in RUN), then sample variants and score them."""
import argparse, json, sys, time
from dataclasses import replace
from pathlib import Path
import torch
from vcdm.config import preset, apply_overrides
from vcdm.data import load_dataset, save_grid
from vcdm.demo import _quality, _embedder_knn
from vcdm.pipeline import Pipeline
from vcdm.runs import RunDir
from vcdm.stages import compute_embeddings, get_kind, resolve_for_data, train_stage

p = argparse.ArgumentParser()
p.add_argument("run")
p.add_argument("--set", action="append", default=[])
p.add_argument("--stages", default="embedder,prior,decoder")
p.add_argument("--variants", default="dpmpp_2m:20:1.0")  # sampler:steps:guidance[:prior_guidance] ;-separated
p.add_argument("--arm", default="decoder")
p.add_argument("--n", type=int, default=1000)
a = p.parse_args()
torch.set_num_threads(2)
out = Path(a.run)
cfg = apply_overrides(preset("mnist"), a.set)
data = load_dataset(cfg.data)
run = RunDir(out)
cfg = resolve_for_data(cfg, data, run)
run.save_config(cfg)
for name in a.stages.split(","):
    if name == "prior" and not run.embeddings.is_file():
        compute_embeddings(out, cfg, data, progress=False)
    kind = get_kind(name)
    if not run.stage_done(kind.folder, kind.train_config(cfg).total_nimg):
        t = time.perf_counter(); train_stage(name, out, cfg, data, progress=False)
        print(f"[{name}] trained in {time.perf_counter()-t:.0f} s", flush=True)
if "embedder" in a.stages:
    print("knn", _embedder_knn(out, cfg), flush=True)
res = {}
for v in ([] if a.variants == "none" else a.variants.split(";")):
    parts = v.split(":")
    s = replace(cfg.sample, sampler=parts[0], num_steps=int(parts[1]), guidance=float(parts[2]),
                prior_guidance=float(parts[3]) if len(parts) > 3 else 1.0)
    pipe = Pipeline.from_run(out, a.arm)
    t = time.perf_counter()
    imgs = pipe(list(range(a.n)), s, progress=False).images
    dt = time.perf_counter() - t
    q = _quality(cfg, data, {a.arm: imgs}, False)["rows"][a.arm]
    save_grid(imgs[:64], out / f"grid_{a.arm}_{v.replace(':','_')}.png", nrow=8)
    print(f"RESULT {out.name} {a.arm} {v}: FID {q['fid']:.2f} P {q['precision']:.3f} R {q['recall']:.3f} TV {q['class_tv']:.3f} ({dt:.0f} s)", flush=True)
    res[v] = q | {"seconds": dt}
with open(out / f"exp_{a.arm}.json", "a") as f:
    f.write(json.dumps({"set": a.set, "results": res}) + "\n")
