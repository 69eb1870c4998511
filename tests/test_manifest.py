"""tools/real_sources.json, the committed manifest of the real files the gpu and full profiles fetch: it lists every
URL the code can ask for, it agrees with the registries' names and checksums, the fixture hub serves a fixture under
each listed name, and a request for anything else is refused and recorded (the rehearsal tests fail on it)."""
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers import datasets, profiles, weights

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import fixture_hub  # noqa: E402

LISTED = fixture_hub.listed_urls()


def _timm_url(hub_id: str) -> str:
    return f"{fixture_hub.HF_BASE}/{hub_id}/resolve/main/model.safetensors"


def _timm_hub_id(tag: str) -> str:
    import timm
    return timm.models.get_pretrained_cfg(tag).hf_hub_id.rstrip("/")


def urls_the_real_profiles_use() -> dict:
    """``{url: what asks for it}`` for the gpu and full profiles: their datasets, every registered weights file,
    FLAIR's text side (Bio_ClinicalBERT's tokenizer files, the knowledge dictionary)."""
    import os
    saved = {k: os.environ.pop(k, None) for k in (weights.HF_ENV, weights.GITHUB_ENV)}  # the real hosts
    try:
        out = {}
        for name in ("gpu", "full"):
            p = profiles.load(name)
            d = datasets.info(p.data.source)
            for f in d.files:
                out[f.url.split("?")[0]] = f"{name}: dataset {d.name}"
            out[p.flair.dictionary_url] = f"{name}: FLAIR's dictionary"
        for w in weights.WEIGHTS.values():
            url = _timm_url(_timm_hub_id(w.path)) if w.host == "timm" else weights.weights_url(w)
            out[url] = f"weights {w.name}"
        for file in ("config.json", "vocab.txt"):
            out[fixture_hub.hf_url("emilyalsentzer/Bio_ClinicalBERT", file)] = "FLAIR's tokenizer"
        out[fixture_hub.hf_url("jusiro2/FLAIR", "config.json")] = "FLAIR's configuration"
        return out
    finally:
        profiles.load("smoke")
        os.environ.pop(profiles.ARCH_ENV, None)
        os.environ.update({k: v for k, v in saved.items() if v is not None})


def test_every_url_the_real_profiles_can_ask_for_is_in_the_manifest():
    missing = {u: why for u, why in urls_the_real_profiles_use().items() if u not in LISTED}
    assert not missing, f"not in tools/real_sources.json: {missing}"


def test_the_timm_weights_are_where_timm_looks_for_them():
    for w in weights.WEIGHTS.values():
        if w.host == "timm":
            assert _timm_hub_id(w.path) == f"timm/{w.path}", w.name


def test_the_manifest_agrees_with_the_registry_checksums():
    for d in datasets.REGISTRY.values():
        for f in d.files:
            entry = LISTED.get(f.url.split("?")[0])
            if entry is not None:
                assert entry.get("md5") == f.md5, (f.name, entry.get("md5"), f.md5)


def test_every_fetched_file_has_a_fixture_and_every_source_says_where_its_facts_come_from():
    for source in fixture_hub.manifest()["sources"]:
        assert source.get("fact_source") and "PENDING" not in source["fact_source"], source["name"]
        if source.get("fetched", True):
            assert source["files"], source["name"]
        for f in source["files"]:
            assert f.get("fixture") in fixture_hub.GENERATORS, (source["name"], f["url"])


def test_the_hub_refuses_and_records_a_file_the_manifest_does_not_list():
    url = next(u for u, e in LISTED.items() if e["source"] == "flair-dictionary")
    with fixture_hub.Hub({url: b"definitions = {}\n"}) as hub:
        unlisted = f"{hub.url}/raw.githubusercontent.com/jusiro/FLAIR/main/flair/modeling/other.py"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(unlisted, timeout=10)
        assert err.value.code == 404
        assert hub.unlisted == ["https://raw.githubusercontent.com/jusiro/FLAIR/main/flair/modeling/other.py"]
        with urllib.request.urlopen(f"{hub.url}/raw.githubusercontent.com/jusiro/FLAIR/main/flair/modeling/"
                                    "dictionary.py", timeout=10) as resp:
            assert resp.read() == b"definitions = {}\n"
        assert len(hub.unlisted) == 1
