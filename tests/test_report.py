import math

import numpy as np
import torch

from helpers.report import METADATA_KEY, RunReport


def test_record_is_plain_json_and_rendered():
    rep = RunReport("99_demo", "Demo chapter", "smoke", "cpu")
    rep.metric("acc", np.float32(0.5))
    rep.metric("loss", torch.tensor(1.25))
    rep.claim("beats chance", paper="+10 points", ours=0.2, held=True)
    rec = rep.to_dict()
    assert rec["metrics"] == {"acc": 0.5, "loss": 1.25}
    assert isinstance(rec["metrics"]["acc"], float)
    assert rec["claims"][0]["held"] is True
    assert rec["profile"] == "smoke" and math.isfinite(rec["wall_time_s"])
    md = rep.markdown()
    assert "beats chance" in md and "| acc | 0.5 |" in md


def test_publish_attaches_the_record(monkeypatch):
    shown = []
    import IPython.display as disp
    monkeypatch.setattr(disp, "display", lambda obj, metadata=None: shown.append((obj, metadata)))
    rep = RunReport("99_demo", "Demo", "smoke", "cpu")
    rep.metric("x", 1)
    rec = rep.publish()
    assert shown and shown[0][1][METADATA_KEY] == rec
