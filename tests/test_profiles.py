import pytest
import torch

from helpers import profiles


def test_every_profile_has_the_same_knobs():
    names = profiles.PROFILE_NAMES
    ref = profiles.load("smoke").knobs
    for name in names:
        knobs = profiles.load(name).knobs
        assert set(knobs) == set(ref), name
        for group, value in ref.items():
            if isinstance(value, dict):
                assert set(knobs[group]) == set(value), f"{name}.{group} differs from smoke.{group}"


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        profiles.load("smok")
    msg = str(err.value)
    assert "smok" in msg
    for name in profiles.VALID_NAMES:
        assert name in msg


def test_auto_follows_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert profiles.load("auto").name == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    p = profiles.load("auto")
    assert p.name == "gpu" and p.requested == "auto"


def test_env_var_is_the_fallback(monkeypatch):
    monkeypatch.setenv(profiles.ENV_VAR, "smoke")
    assert profiles.load(None).name == "smoke"
    assert profiles.load("cpu").name == "cpu"  # an explicit name wins
    monkeypatch.setenv(profiles.ENV_VAR, "bogus")
    with pytest.raises(ValueError, match="bogus"):
        profiles.load(None)
    monkeypatch.delenv(profiles.ENV_VAR)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert profiles.load(None).name == "cpu"


def test_knobs_read_as_attributes_and_fail_loudly():
    p = profiles.load("smoke")
    assert p.data.n_train == p["data"]["n_train"]
    with pytest.raises(AttributeError, match="n_train"):
        p.data.ntrain
    with pytest.raises(AttributeError):
        p.data.n_train = 3


def test_show_prints_every_knob_of_the_groups(capsys):
    p = profiles.load("smoke")
    p.show()
    out = capsys.readouterr().out
    assert "profile" in out and "smoke" in out
    for key in p.data:
        assert f"data.{key}" in out
    with pytest.raises(KeyError, match="no knob group"):
        p.show("nonexistent")


def test_smoke_is_smaller_than_cpu():
    s, c = profiles.load("smoke"), profiles.load("cpu")
    assert s.simclr.image_size <= c.simclr.image_size and s.synthretina.n_train < c.synthretina.n_train
    assert s.data.n_train < c.data.n_train
    assert s.world == c.world == "embedded"
    assert profiles.load("gpu").world == "real"


def test_a_missing_knob_names_the_profile_the_group_and_the_knobs_there_are():
    """Issue 28: a typo in a knob read, as a key or as an attribute, says where it looked and what exists."""
    import pytest as _pytest
    from helpers import profiles as _profiles
    K = _profiles.load("cpu").simclr
    for read in (lambda: K["epochz"], lambda: K.epochz):
        with _pytest.raises(_profiles.MissingKnob) as err:
            read()
        assert "no knob 'epochz' in profile 'cpu' › simclr" in str(err.value) and "epochs" in str(err.value)
    with _pytest.raises(KeyError):  # still a KeyError and an AttributeError, as before
        K["epochz"]
    assert not hasattr(K, "epochz") and K.get("epochz", 3) == 3 and K["epochs"] == K.epochs
