"""tools/gpu_check.py, the script a GPU machine runs, exercised here in the rehearsal profile on one chapter: it
serves the hubs, runs the chapter, the MFU benchmark, and writes the JSON of times and peak memory."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.notebooks
def test_the_gpu_check_runs_a_chapter_and_writes_its_json(tmp_path):
    out = tmp_path / "check.json"
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--profile", "rehearsal",
                           "--only", "05", "--out", str(out), "--work", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    chapter = result["chapters"]["05_flair"]
    assert chapter["ok"] and chapter["seconds"] > 0 and chapter["peak_host_mib"] > 100
    assert result["unlisted_requests"] == [] and result["mfu"][0]["flops_per_step"] > 0
