"""tools/verdicts.py: a build's verdicts kept per claim, and two builds compared (issues 26 and 28)."""
import copy
import json

import verdicts


def report():
    return {"profile": "cpu", "chapters": [
        {"chapter": "01_simclr", "device": "cpu (2 threads)", "notebook_seconds": 480.2, "claims": [
            {"name": "probe beats random", "held": True, "reference": {"held": True}},
            {"name": "gap", "held": False, "refuted": False},
            {"name": "few labels", "held": False}]},
        {"chapter": "02_dino", "device": "cpu (2 threads)", "notebook_seconds": 400.0, "claims": [
            {"name": "no collapse", "held": True, "reference": {"held": False, "refuted": True}}]}]}


def test_record_reads_each_verdict_from_its_interval():
    rec = verdicts.record(report(), commit="abc")
    v = rec["verdicts"]
    assert v["01_simclr"]["probe beats random"] == {"run": "held", "reference": "held"}
    assert v["01_simclr"]["gap"] == {"run": "undecided", "reference": "not measured"}
    assert v["01_simclr"]["few labels"]["run"] == "not held"
    assert v["02_dino"]["no collapse"] == {"run": "held", "reference": "not held"}
    assert verdicts.counts(rec) == {"held": 2, "undecided": 1, "not held": 1}
    assert rec["seconds"]["01_simclr"] == 480.2 and rec["commit"] == "abc"


def test_the_same_build_agrees_and_every_kind_of_change_is_found():
    a = verdicts.record(report())
    assert verdicts.differences(a, verdicts.record(report())) == []
    flipped = report()
    flipped["chapters"][0]["claims"][1]["refuted"] = True            # undecided -> not held
    assert verdicts.differences(a, verdicts.record(flipped)) == [("01_simclr", "gap", "run", "undecided", "not held")]
    ref = report()
    ref["chapters"][1]["claims"][0]["reference"] = {"held": True}   # only the reference run's verdict moves
    assert verdicts.differences(a, verdicts.record(ref)) == [("02_dino", "no collapse", "reference", "not held", "held")]
    missing = report()
    del missing["chapters"][0]["claims"][2]
    assert ("01_simclr", "few labels", "run", "not held", None) in verdicts.differences(a, verdicts.record(missing))
    failed = copy.deepcopy(report())
    failed["chapters"][1]["status"] = "failed"
    assert len(verdicts.differences(a, verdicts.record(failed))) == 4  # its claim gone, 'failed' in its place


def test_command_line_exit_status(tmp_path, capsys):
    (tmp_path / "r.json").write_text(json.dumps(report()))
    assert verdicts.main(["record", str(tmp_path / "r.json"), str(tmp_path / "a.json"), "--commit", "x"]) == 0
    assert verdicts.main(["compare", str(tmp_path / "a.json"), str(tmp_path / "a.json")]) == 0
    other = report()
    other["chapters"][0]["claims"][0]["held"] = False
    (tmp_path / "o.json").write_text(json.dumps(other))
    verdicts.main(["record", str(tmp_path / "o.json"), str(tmp_path / "b.json")])
    assert verdicts.main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 1
    assert "probe beats random · run: held → not held" in capsys.readouterr().out
