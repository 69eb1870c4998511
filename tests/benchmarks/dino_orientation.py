"""DINO orientation runs for chapter 2: one config (JSON overrides on the command line), student and teacher probed.

    python tests/benchmarks/dino_orientation.py '{"momentum": 0.99, "out_dim": 256, "epochs": 20, "tag": "..."}'

Each run appends one row to tests/benchmarks/results/dino_orientation.jsonl: the config, pretraining seconds, the
teacher's entropy along training, and (linear, k-NN) balanced accuracy in points for random init, the student and
the teacher on every SynthRetina task. ``vit`` = {"patch", "dim", "depth", "heads"} trains a timm ViT instead.
Run alone: two trainings at once on 2 cores slow each other several times over.
"""
import json, sys, time, os
from pathlib import Path
import torch
from helpers import data, env, evaluation, models
from helpers.methods import dino
from helpers.views import FundusViews
TASKS = ("dr_grade", "hr_grade", "glaucoma", "amd", "site_id")
cfg = dict(encoder="small_cnn_narrow", size=48, epochs=30, lr=1e-3, bs=128, seed=0, out_dim=1024, hidden_dim=256,
           bottleneck_dim=64, n_local=4, momentum=0.996, t_teacher=0.04, warmup_t_teacher=0.04, warmup_epochs=0,
           t_student=0.1, wd=0.04, local_scale=[0.05, 0.25], global_scale=[0.5, 1.0], center_momentum=0.9, local_size=None, vit=None, tag="", norm_last_layer=True)
cfg.update(json.loads(sys.argv[1]))
torch.set_num_threads(2)
table = data.load("synthretina", size=cfg["size"], n_train=2000, n_valid=500, n_test=500, seed=0, balanced=True, progress=False)
def make_enc():
    if cfg["vit"]:
        import timm
        v = cfg["vit"]
        m = timm.models.vision_transformer.VisionTransformer(img_size=cfg["size"], patch_size=v["patch"], embed_dim=v["dim"], depth=v["depth"], num_heads=v["heads"], num_classes=0, mlp_ratio=v.get("mlp", 4.0), dynamic_img_size=True)
        return m
    return models.create_encoder(cfg["encoder"])[0]
def probe_all(enc):
    f = evaluation.extract_features(enc, table, size=cfg["size"], cache=False)
    out = {}
    for t in TASKS:
        p = evaluation.probe(f, table, t, max_iter=1000)
        out[t] = (round(100*p["linear"]["balanced_accuracy"],1), round(100*p["knn"]["balanced_accuracy"],1))
    return out
RESULTS = Path(__file__).parent / "results"
rkey = f"/tmp/dino_orientation_rand_{cfg['encoder'] if not cfg['vit'] else json.dumps(cfg['vit'],sort_keys=True)}_{cfg['seed']}.json".replace(" ","")
env.seed_everything(cfg["seed"])
enc = make_enc()
if os.path.exists(rkey): rand = json.load(open(rkey))
else:
    rand = probe_all(enc); json.dump(rand, open(rkey, "w"))
dls = data.dataloaders(table, None, bs=cfg["bs"], size=cfg["size"], device="cpu", augment=False, normalize=False, seed=cfg["seed"])
kn = {k: cfg[k] for k in ("n_local","momentum","t_teacher","warmup_t_teacher","warmup_epochs","t_student","center_momentum")}
learn = dino.dino_learner(dls, enc, out_dim=cfg["out_dim"], hidden_dim=cfg["hidden_dim"], bottleneck_dim=cfg["bottleneck_dim"], wd=cfg["wd"], norm_last_layer=cfg["norm_last_layer"], local_scale=tuple(cfg["local_scale"]), global_scale=tuple(cfg["global_scale"]), local_size=cfg["local_size"], views=FundusViews(), **kn)
t0 = time.perf_counter()
with learn.no_bar(), learn.no_logging():
    learn.fit_one_cycle(cfg["epochs"], cfg["lr"])
secs = time.perf_counter() - t0
h = learn.dino.history
st = probe_all(learn.model.student[0]); te = probe_all(learn.model.teacher[0])
row = dict(cfg=cfg, seconds=round(secs,1), ent=[round(h[i]["entropy"],2) for i in range(0,len(h),max(1,len(h)//6))]+[round(h[-1]["entropy"],2)], kl=round(h[-1]["kl_uniform"],2), rand=rand, student=st, teacher=te)
open(RESULTS / "dino_orientation.jsonl", "a").write(json.dumps(row)+"\n")
def g(d): return " ".join(f"{t[:3]} {d[t][0]-rand[t][0]:+.1f}/{d[t][1]-rand[t][1]:+.1f}" for t in TASKS)
print(cfg["tag"], f"{secs:.0f}s ent {row['ent']} kl {row['kl']}")
print("  student", g(st)); print("  teacher", g(te))
