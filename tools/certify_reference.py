"""Check that the current code trains a shipped reference run's weights bit for bit, and record it in the provenance.

    python tools/certify_reference.py dino --against 01b093d      # the commit whose code trained the shipped run

A reference run takes 10–30 minutes of CPU to retrain. When a change moves code without changing what it computes
(a recipe moved into ``helpers.chapters``, imports hoisted), the run's recorded code hash no longer matches the
code, and ``tests/test_reference.py`` asks for a retrain. This tool is the cheaper, checkable alternative: it trains
the first epoch of the reference recipe twice on this machine — with the code of ``--against`` (a git commit whose
recipe hash must equal the hash recorded in the provenance) and with the working tree's code — from the same seed
and data, and compares every weight. Only when all are identical does it add an ``equivalent_code`` entry (the new
hash, the commit, the epochs compared, the largest difference, 0.0, the machine and date) to
``src/helpers/reference_runs/<method>.json``; :func:`helpers.reference.up_to_date` accepts such an entry. Any
difference, however small, leaves the provenance as it is: retrain with ``python -m helpers.pretrain METHOD
--profile reference``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# One epoch of the reference recipe, as the code of each side calls it (the API moved with the chapters package).
OLD_RUN = {
    "simclr": "from helpers.methods import simclr\nm, _ = simclr.pretrain(t, K, SEED, 'cpu', epochs=1, bar=False)",
    "mae": "from helpers.methods import mae\nm, _ = mae.pretrain(t, K, SEED, 'cpu', epochs=1, bar=False)",
    "dino": ("from helpers import evaluation\nfrom helpers.methods import dino\n"
             "mon = evaluation.monitor_set(t, K['monitor_task'], n=K['monitor_size'], size=K['image_size'])\n"
             "watch = lambda te: evaluation.collapse_diagnostics(te[0], mon, k=P.protocol['knn_k'], embed=te[1].mlp)\n"
             "m, _ = dino.pretrain(t, K, SEED, 'cpu', epochs=1, bar=False, monitor=watch)"),
}
NEW_RUN = ("from helpers import chapters\n"
           "m, _ = chapters.recipe(METHOD).main_run(P, t, SEED, 'cpu', epochs=1, bar=False)")
SCRIPT = """
import json, sys, torch
from helpers import data, profiles, reference
METHOD, SEED, OUT = {method!r}, {seed}, {out!r}
P = profiles.load("reference"); K = P[METHOD]
t = data.load(P.data.source, size=K["image_size"], n_train=P.data.n_train, n_valid=P.data.n_valid,
              n_test=P.data.n_test, seed=0, progress=False, **P.data.options)
{run}
torch.save({{k: v.detach().cpu() for k, v in m.state_dict().items()}}, OUT)
print(json.dumps({{"recipe_hash": reference.recipe_hash(METHOD)}}))
"""


def _run(src: Path, method: str, seed: int, run: str, out: Path, cache: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "RETINA_CACHE": str(cache), "PYTHONWARNINGS": "ignore"}
    code = SCRIPT.format(method=method, seed=seed, out=str(out), run=run)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=cache)
    if done.returncode:
        raise SystemExit(f"the run with the code in {src} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def certify(method: str, against: str) -> dict:
    """Compare one epoch of ``method``'s reference recipe under ``against`` and under the working tree."""
    import torch

    from helpers import efficiency, env, reference
    rec = reference.provenance(method)
    if rec is None:
        raise SystemExit(f"no reference run of {method} is shipped")
    current = reference.recipe_hash(method)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old_tree = tmp / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(old_tree), against],
                       check=True, capture_output=True)
        try:
            runs = {}
            for side, src, run in (("old", old_tree / "src", OLD_RUN[method]), ("new", REPO / "src", NEW_RUN)):
                (tmp / side).mkdir()
                runs[side] = _run(src, method, rec["seed"], run, tmp / f"{side}.pt", tmp / side)
                print(f"{side}: one epoch trained (recipe hash {runs[side]['recipe_hash']})", flush=True)
            a, b = torch.load(tmp / "old.pt", weights_only=True), torch.load(tmp / "new.pt", weights_only=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old_tree)],
                           capture_output=True)
    if runs["old"]["recipe_hash"] != rec["code_hash"]:
        raise SystemExit(f"{against}'s recipe hash is {runs['old']['recipe_hash']}, but the shipped run was trained "
                         f"by {rec['code_hash']}: name the commit whose code trained it")
    if runs["new"]["recipe_hash"] != current:
        raise SystemExit("the working tree's recipe hash changed during the check; run it again")
    if sorted(a) != sorted(b):
        raise SystemExit(f"the two runs hold other weights: {sorted(set(a) ^ set(b))[:5]}")
    diff = max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)
    print(f"{method}: {len(a)} tensors compared after one epoch; largest difference {diff}")
    if diff != 0.0:
        raise SystemExit("not identical: the current code trains other weights; retrain the reference run with "
                         f"`{rec['command']}`")
    entry = {"code_hash": current, "from_code_hash": rec["code_hash"], "commit": against, "epochs_compared": 1,
             "tensors": len(a), "max_abs_diff": diff, "machine": efficiency.describe_machine(env.get_device()),
             "checked": time.strftime("%Y-%m-%d", time.gmtime()), "command": f"python tools/certify_reference.py "
             f"{method} --against {against}"}
    rec["equivalent_code"] = [e for e in rec.get("equivalent_code", []) if e["code_hash"] != current] + [entry]
    path = reference.SHIPPED / f"{method}.json"
    env.atomic_write(path, lambda t: t.write_text(json.dumps(rec, indent=1) + "\n"))
    print(f"recorded in {path}")
    return entry


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("method", choices=sorted(OLD_RUN))
    ap.add_argument("--against", required=True, help="the git commit whose code trained the shipped run")
    a = ap.parse_args(argv)
    certify(a.method, a.against)
    return 0


if __name__ == "__main__":
    sys.exit(main())
