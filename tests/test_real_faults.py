"""Faults of the real world, against tools/fixture_hub.py's copies of the real sources (conftest's ``real_hub``):
each fault is a clear message, nothing already received is lost, a host that is not Hugging Face never says
"set HF_TOKEN", a gated repository sends the student to Colab's Secrets panel and the chapter goes on with the
open alternative, and a runtime that restarts mid-chapter resumes from the runs it saved."""
import hashlib
import json
import os

import nbformat
import pytest

import bookrunner as book
from helpers import datasets, downloads, profiles, weights

RETINA = datasets.needed_file(datasets.info("retinamnist"), 28)
GREEN = weights.weights_url(weights.info("retfound-green"))
NON_HF = {"zenodo": (RETINA.url, RETINA.md5), "github": (GREEN, None)}


@pytest.fixture
def rehearsal_arch():
    """The rehearsal's architectures in this process (the hub's weight fixtures have their shapes)."""
    saved = os.environ.get(profiles.ARCH_ENV)
    profiles.load("rehearsal")
    yield
    os.environ.pop(profiles.ARCH_ENV, None) if saved is None else os.environ.update({profiles.ARCH_ENV: saved})


def _real(url: str) -> str:
    return url.split("?")[0]


@pytest.mark.parametrize("host", sorted(NON_HF))
@pytest.mark.parametrize("status, error", [(401, downloads.GatedError), (403, downloads.GatedError),
                                           (404, downloads.DownloadError), (429, downloads.OfflineError)])
def test_a_refusal_from_a_non_hf_host_says_what_happened_never_hf_token(real_hub, tmp_path, host, status, error):
    url, md5 = NON_HF[host]
    dest = tmp_path / "file"
    with real_hub.environment():
        real_hub.faults[_real(url)] = status  # answered once, then the file again
        with pytest.raises(error) as err:
            downloads.fetch(url, dest, md5=md5, progress=False)
        message = str(err.value)
        assert str(status) in message and "HF_TOKEN" not in message and "token" not in message.lower()
        if status == 429:
            assert "Wait 1 s" in message  # the host's Retry-After, passed on
        assert not dest.exists()
        downloads.fetch(url, dest, md5=md5, progress=False)  # the same command again: the file arrives
    assert dest.read_bytes() == real_hub.files[_real(url)]


@pytest.mark.parametrize("host", sorted(NON_HF))
def test_a_cut_download_keeps_its_bytes_and_resumes_with_range(real_hub, tmp_path, host):
    url, md5 = NON_HF[host]
    body = real_hub.files[_real(url)]
    dest = tmp_path / "file"
    with real_hub.environment():
        real_hub.faults[_real(url)] = ("cut", len(body) // 3)
        with pytest.raises(downloads.OfflineError, match="resume") as err:
            downloads.fetch(url, dest, md5=md5, progress=False)
        assert "HF_TOKEN" not in str(err.value)
        part = dest.with_name(dest.name + ".part")
        assert part.stat().st_size == len(body) // 3 and not dest.exists()
        start = len(real_hub.log)
        downloads.fetch(url, dest, md5=md5, progress=False)
    assert dest.read_bytes() == body and not part.exists()
    assert ("GET", _real(url), 206) in real_hub.log[start:]  # only the rest was sent


def test_gated_retfound_without_a_token_names_colab_secrets_and_goes_on_with_green(real_hub, tmp_path, capsys,
                                                                                   rehearsal_arch):
    with real_hub.environment():
        encoder, used = weights.open_or_alternative("retfound-mae", cache=tmp_path / "hf")
    said = capsys.readouterr().out
    assert used == "retfound-green" and encoder is not None
    assert "Secrets" in said and "HF_TOKEN" in said and "retfound-green" in said
    with pytest.raises(downloads.GatedError, match="Secrets"):  # asked for directly, the same advice
        with real_hub.environment():
            weights.pretrained_encoder("retfound-mae", cache=tmp_path / "hf2")


def test_gated_retfound_with_a_token_is_retfound(real_hub, tmp_path, rehearsal_arch):
    token = real_hub.tokens["YukunZhou/RETFound_mae_natureCFP"]
    with real_hub.environment():
        encoder, used = weights.open_or_alternative("retfound-mae", token=token, cache=tmp_path / "hf")
    assert used == "retfound-mae"


RESTART = """import os
from helpers.chapters import ch01 as _ch01
_pretrain = _ch01.pretrain


def _restart_after_the_first_run(*args, **kwargs):
    out = _pretrain(*args, **kwargs)
    os._exit(1)  # the runtime restarts here, as Colab's does when it disconnects


_ch01.pretrain = _restart_after_the_first_run
"""


@pytest.mark.notebooks
def test_a_runtime_restart_mid_chapter_resumes_from_the_saved_runs(real_hub, tmp_path, monkeypatch):
    """Chapter 1 in rehearsal, its kernel killed right after the first SimCLR run is saved; run again, the chapter
    loads that run (no second training of it), trains the rest and finishes."""
    monkeypatch.setenv("RETINA_CACHE", str(tmp_path / "cache"))  # no run of another test to load
    source = next(p for p in book.discover() if p.stem.startswith("01"))
    nb = nbformat.read(source, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "pretrained, histories = {}" in c.source)
    nb.cells.insert(at, nbformat.v4.new_code_cell(RESTART))
    interrupted = tmp_path / "01_interrupted.ipynb"
    nbformat.write(nb, interrupted)
    with real_hub.environment():
        first = book.execute(interrupted, tmp_path / "out-1.ipynb", "rehearsal", timeout=300, progress=False)
        assert first.error is not None  # the kernel died
        saved = sorted(p.name for p in (tmp_path / "cache" / "checkpoints").glob("simclr*.safetensors"))
        assert saved, "the first run was not saved before the restart"
        again = book.execute(source, tmp_path / "out-2.ipynb", "rehearsal", timeout=300, progress=False)
    assert again.error is None, again.error
    out = nbformat.read(again.executed, as_version=4)
    cell = next(c for c in out.cells if c.cell_type == "code" and "pretrained, histories = {}" in c.source)
    text = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
    assert text.count("loaded the saved run") == 1, text[-2000:]


def test_flairs_released_resnet_sees_plain_pixels_in_zero_one(real_hub, tmp_path, rehearsal_arch):
    """Chapter 5 probes FLAIR's ResNet itself (the few-shot features), so the conversion from the book's
    fundus-normalised input to FLAIR's [0, 1] pixels sits on the ResNet, not only on the whole vision tower."""
    import torch

    from helpers import views
    from helpers.methods import flair
    with real_hub.environment():
        model = flair.official_flair(cache=tmp_path / "hf", progress=False)
    resnet = model.vision_model.model
    seen = []
    handle = resnet.conv1.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    pixels = torch.rand(2, 3, 32, 32)
    normalised = (pixels - torch.tensor(views.FUNDUS_MEAN).view(1, 3, 1, 1)) / torch.tensor(views.FUNDUS_STD).view(
        1, 3, 1, 1)
    with torch.no_grad():
        resnet(normalised)
    handle.remove()
    assert torch.allclose(seen[0], pixels, atol=1e-5)


def test_a_chapter_downloads_one_retinamnist_size_only(real_hub, tmp_path, monkeypatch):
    monkeypatch.setenv("RETINA_DATA", str(tmp_path / "data"))
    with real_hub.environment():
        start = len(real_hub.log)
        datasets.load_dataset("retinamnist", size=64, download_missing=True)
    got = {u for m, u, code in real_hub.log[start:] if m == "GET" and "retinamnist" in u and code in (200, 206)}
    assert got == {"https://zenodo.org/records/10519652/files/retinamnist_64.npz"}, got


def test_the_gpu_profile_measures_flair_over_several_seeds():
    try:
        assert len(profiles.load("gpu").flair.seeds) >= 3
    finally:
        profiles.load("smoke")
