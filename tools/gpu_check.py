"""The GPU check: every chapter in the ``gpu`` profile against tools/fixture_hub.py's copies of the hubs (full-size
architectures, RetinaMNIST's published image counts), then the MFU benchmark of chapter 3's MAE step; one JSON with
each chapter's wall time, peak GPU memory (nvidia-smi, sampled every 0.5 s) and peak host memory of its kernel.

    tools/gpu_check.sh                       # all chapters, gpu profile -> gpu_check.json
    python tools/gpu_check.py --profile rehearsal --only 05 --out /tmp/check.json   # the script itself, on a CPU

Compare the wall times with book/instructors.md's T4 estimates (tools/flop_budget.py). The fixtures are random
weights and SynthRetina images under the real names: the times and memory are real, the metrics are not.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tools"))


class PeakMemory:
    """Peak GPU memory in use (nvidia-smi, MiB summed over GPUs) and peak RSS of this process's children (MiB),
    sampled in a thread while the block runs."""

    def __init__(self, every: float = 0.5):
        self.every, self.gpu_mib, self.host_mib = every, None, 0.0
        self.smi = shutil.which("nvidia-smi")
        self._stop = threading.Event()

    def _sample(self):
        import psutil
        me = psutil.Process()
        while not self._stop.is_set():
            rss = 0
            for child in me.children(recursive=True):
                try:
                    rss += child.memory_info().rss
                except psutil.Error:
                    pass
            self.host_mib = max(self.host_mib, rss / 2 ** 20)
            if self.smi:
                out = subprocess.run([self.smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True).stdout.split()
                if out:
                    self.gpu_mib = max(self.gpu_mib or 0.0, float(sum(float(v) for v in out)))
            self._stop.wait(self.every)

    def __enter__(self):
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="gpu")
    ap.add_argument("--only", nargs="*", default=None, help="chapters whose name contains one of these")
    ap.add_argument("--out", type=Path, default=ROOT / "gpu_check.json")
    ap.add_argument("--work", type=Path, default=None, help="cache, data and executed notebooks (default: a temp dir)")
    ap.add_argument("--timeout", type=int, default=3600, help="per cell, seconds")
    ap.add_argument("--no-mfu", action="store_true")
    a = ap.parse_args(argv)

    import fixture_hub

    import bookrunner as book
    from helpers import profiles
    work = a.work or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    os.environ[fixture_hub.REAL_SIZES_ENV] = "1"
    profiles.load(a.profile)  # the weight fixtures take this profile's architectures
    t0 = time.perf_counter()
    files = fixture_hub.build_fixtures(cache=work / "fixtures")
    fixtures_s = time.perf_counter() - t0
    tokens = {u.split("/resolve/")[0].removeprefix(fixture_hub.HF_BASE + "/"): "hf_gpu_check"
              for u, e in fixture_hub.listed_urls().items() if e.get("gated")}
    result = {"profile": a.profile, "host": platform.node(), "python": platform.python_version(),
              "fixtures_seconds": round(fixtures_s, 1), "chapters": {}, "unlisted_requests": []}
    try:
        import torch
        result["torch"] = torch.__version__
        result["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception as exc:  # noqa: BLE001 (recorded, not fatal)
        result["device"] = f"unknown ({exc})"
    with fixture_hub.Hub(files, tokens=tokens) as hub:
        for path in book.select(a.only):
            fresh = work / path.stem
            os.environ["RETINA_CACHE"], os.environ["RETINA_DATA"] = str(fresh / "cache"), str(fresh / "data")
            with hub.environment(hf_home=fresh / "hf"), PeakMemory() as peak:
                run = book.execute(path, fresh / path.name, a.profile, timeout=a.timeout, progress=False)
            result["chapters"][path.stem] = {
                "seconds": round(run.seconds, 1), "ok": run.error is None,
                "error": None if run.error is None else run.error[-2000:],
                "peak_gpu_mib": peak.gpu_mib, "peak_host_mib": round(peak.host_mib, 1)}
            print(f"[gpu-check] {path.stem}: {'ok' if run.error is None else 'FAILED'} in {run.seconds:.0f} s, "
                  f"GPU {peak.gpu_mib} MiB, host {peak.host_mib:.0f} MiB", flush=True)
        result["unlisted_requests"] = list(hub.unlisted)
    if not a.no_mfu:
        mfu = work / "mfu.jsonl"
        done = subprocess.run([sys.executable, str(ROOT / "tests" / "benchmarks" / "mfu_mae.py"), "--out", str(mfu),
                               *(["--quick"] if a.profile == "rehearsal" else [])], capture_output=True, text=True)
        result["mfu"] = ([json.loads(x) for x in mfu.read_text().splitlines()] if mfu.exists() else
                         {"error": done.stderr[-2000:]})
    a.out.write_text(json.dumps(result, indent=1))
    print(f"[gpu-check] wrote {a.out}")
    return 0 if all(c["ok"] for c in result["chapters"].values()) and not result["unlisted_requests"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
