"""Each chapter's gpu-profile training, estimated by tools/flop_budget.py (FlopCounterMode on the meta device,
steps from the profile's knobs): within 20 minutes of a T4 at 25 TFLOP/s and 14 GB of activations, and the
instructors page shows the same table."""
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import flop_budget  # noqa: E402

import bookrunner as book  # noqa: E402
from helpers import profiles  # noqa: E402


@pytest.fixture(scope="module")
def gpu_table():
    try:
        return flop_budget.table("gpu")
    finally:
        profiles.load("smoke")


def test_the_counter_agrees_with_resnet50s_published_cost():
    """ResNet-50 at 224 px: 4.1 G multiply-adds forward (torchvision's model card), so about 3 x 8.2 GFLOP a
    training step per image (backward costs about twice the forward)."""
    flops, _ = flop_budget._count(flop_budget._timm("resnet50", num_classes=1000), flop_budget._images(2, 224))
    assert 0.9 * 3 * 8.2e9 < flops / 2 < 1.1 * 3 * 8.2e9


def test_every_chapter_fits_a_t4_in_20_minutes_and_14_gb(gpu_table):
    assert [r["chapter"] for r in gpu_table] == [p.stem for p in book.discover()]
    over = {r["chapter"]: round(r["t4_min"], 1) for r in gpu_table if r["t4_min"] > flop_budget.BUDGET_MIN}
    assert not over, f"over {flop_budget.BUDGET_MIN} T4 minutes: {over}"
    heavy = {r["chapter"]: round(r["act_gb"], 1) for r in gpu_table if r["act_gb"] > flop_budget.MEMORY_GB}
    assert not heavy, f"over {flop_budget.MEMORY_GB} GB of activations: {heavy}"
    assert all(j.flops > 0 and j.steps > 0 for r in gpu_table for j in r["jobs"])


def test_the_instructors_page_shows_the_tools_table():
    page = (ROOT / "book" / "instructors.md").read_text()
    shown = re.search(r"<!-- flop-budget:start -->\n(.*?)\n<!-- flop-budget:end -->", page, re.S)
    try:
        expected = flop_budget.markdown("gpu")
    finally:
        profiles.load("smoke")
    assert shown and shown.group(1).strip() == expected.strip(), \
        "book/instructors.md is out of date: paste `python tools/flop_budget.py --markdown` between its markers"
