"""Pretrained-weight loaders on checkpoints built here in each official key layout, served from 127.0.0.1."""
import copy
import io
import pickle

import pytest
import timm
import torch

from helpers import downloads, weights
from helpers.views import FUNDUS_MEAN, FUNDUS_STD
from fixtures_http import FileServer


def as_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def fundus_normalised(pixels):
    """What the book's dataloaders give an encoder: [0, 1] pixels normalised with the fundus statistics."""
    return (pixels - torch.tensor(FUNDUS_MEAN).view(1, 3, 1, 1)) / torch.tensor(FUNDUS_STD).view(1, 3, 1, 1)


def test_retfound_layout_token_and_key_mapping(tmp_path, monkeypatch, capsys):
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0)
    official = {f"{k}": v.clone() for k, v in vit.state_dict().items()}
    official["mask_token"] = torch.zeros(1, 1, 192)
    official["decoder_embed.weight"] = torch.zeros(8, 192)
    blob = as_bytes({"model": official})
    with FileServer({"YukunZhou/RETFound_mae_natureCFP/resolve/main/RETFound_mae_natureCFP.pth": blob},
                    token="hf_secret") as srv:
        monkeypatch.setenv(weights.HF_ENV, srv.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        with pytest.raises(downloads.GatedError, match="HF_TOKEN"):
            weights.pretrained_encoder("retfound-mae", cache=tmp_path, arch="vit_tiny_patch16_224")
        with pytest.raises(downloads.GatedError, match="401"):
            weights.pretrained_encoder("retfound-mae", token="wrong", cache=tmp_path, arch="vit_tiny_patch16_224")
        model = weights.pretrained_encoder("retfound-mae", token="hf_secret", cache=tmp_path,
                                           arch="vit_tiny_patch16_224", progress=False)
    out = capsys.readouterr().out
    # decoder and mask token dropped by the key map; RETFound's global pooling (models_vit.py, global_pool=True):
    # the encoder's final `norm` is replaced by a fresh `fc_norm` after the mean over the patch tokens
    assert "2 missing, 2 unexpected" in out and "fc_norm.weight" in out and "norm.weight" in out
    for k, v in vit.state_dict().items():
        if not k.startswith("norm."):
            assert torch.equal(model.state_dict()[k], v)
    assert model.input_stats == {"mean": weights.IMAGENET_MEAN, "std": weights.IMAGENET_STD}  # RETFound: ImageNet


def test_retfound_features_pool_the_patch_tokens_not_cls(tmp_path, monkeypatch):
    """RETFound's evaluation averages the patch tokens (then fc_norm); the CLS token is not its feature."""
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0)
    blob = as_bytes({"model": vit.state_dict()})
    with FileServer({"YukunZhou/RETFound_mae_natureCFP/resolve/main/RETFound_mae_natureCFP.pth": blob},
                    token="hf_secret") as srv:
        monkeypatch.setenv(weights.HF_ENV, srv.url)
        model = weights.pretrained_encoder("retfound-mae", token="hf_secret", cache=tmp_path,
                                           arch="vit_tiny_patch16_224", progress=False).eval()
    model._forward_pre_hooks.clear()  # compare on the model's own input statistics
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        tokens = model.forward_features(x)  # [B, 1 + patches, D], norm is an identity under global pooling
        want = model.fc_norm(tokens[:, 1:].mean(1))
        got = model(x)
    assert model.global_pool == "avg"
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, model.fc_norm(tokens[:, 0]), atol=1e-3)


def test_retfound_green_from_a_release(tmp_path, monkeypatch, capsys):
    ref = timm.create_model("vit_small_patch14_reg4_dinov2", img_size=392, num_classes=0)
    blob = as_bytes(ref.state_dict())
    path = "justinengelmann/RETFound_Green/releases/download/v0.1/retfoundgreen_statedict.pth"
    with FileServer({path: blob}) as srv:
        monkeypatch.setenv(weights.GITHUB_ENV, srv.url)
        model = weights.pretrained_encoder("retfound-green", cache=tmp_path, progress=False)
    assert "0 missing, 0 unexpected" in capsys.readouterr().out
    assert model.global_pool == "avg"
    pixels = torch.rand(1, 3, 392, 392)
    ref.global_pool = "avg"
    with torch.no_grad():  # the book feeds fundus-normalised images; RETFound-Green was trained on (x - 0.5) / 0.5
        expected = ref.eval()((pixels - 0.5) / 0.5)
        assert torch.allclose(model.eval()(fundus_normalised(pixels)), expected, atol=1e-4)
        assert torch.allclose(copy.deepcopy(model)(fundus_normalised(pixels)), expected, atol=1e-4)  # as fine-tuning copies
    assert model.input_stats == {"mean": (0.5,) * 3, "std": (0.5,) * 3}


def test_flair_vision_tower_is_extracted(tmp_path, monkeypatch, capsys):
    resnet = timm.create_model("resnet18", num_classes=0)
    state = {f"vision_model.model.{k}": v for k, v in resnet.state_dict().items()}
    state["vision_model.model.fc.weight"] = torch.zeros(3, 3)
    state["vision_model.projection_head_vision.projection.weight"] = torch.zeros(512, 512)
    state["text_model.model.embeddings.word_embeddings.weight"] = torch.zeros(10, 4)
    state["logit_scale"] = torch.tensor(4.6)
    from safetensors.torch import save
    # the published repository holds model.safetensors + config.json (no flair_resnet.pth)
    with FileServer({"jusiro2/FLAIR/resolve/main/model.safetensors": save(state)}) as srv:
        monkeypatch.setenv(weights.HF_ENV, srv.url)
        model = weights.pretrained_encoder("flair-resnet50", cache=tmp_path, arch="resnet18", progress=False)
    assert "0 missing, 0 unexpected" in capsys.readouterr().out
    assert torch.equal(model.conv1.weight, resnet.conv1.weight)
    pixels = torch.rand(2, 3, 64, 64)
    with torch.no_grad():  # FLAIR reads plain [0, 1] pixels
        assert torch.allclose(model.eval()(fundus_normalised(pixels)), resnet.eval()(pixels), atol=1e-4)


def test_mismatched_keys_are_reported(capsys):
    model = timm.create_model("resnet18", num_classes=0)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("layer4")}
    state["extra.weight"] = torch.zeros(1)
    state["conv1.weight"] = torch.zeros(1, 1, 1, 1)
    rep = weights.load_into(model, state, "test")
    assert any(k.startswith("layer4") for k in rep["missing"])
    assert rep["unexpected"] == ["extra.weight"] and rep["shape_mismatch"] == ["conv1.weight"]


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_never_unpickles_arbitrary_objects(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"model": Evil()}))
    with pytest.raises(weights.WeightsError, match="refusing to unpickle"):
        weights.read_checkpoint(path)
    assert "this must never run" not in capsys.readouterr().out


def test_safetensors_checkpoints(tmp_path):
    from safetensors.torch import save_file
    model = timm.create_model("resnet18", num_classes=0)
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    state = weights.read_checkpoint(tmp_path / "w.safetensors")
    assert set(state) == set(model.state_dict())


def test_unknown_weights_list_valid_names():
    with pytest.raises(weights.WeightsError, match="retfound-green"):
        weights.pretrained_encoder("retfound-large")


def test_weights_errors_are_download_errors():
    assert issubclass(weights.WeightsError, downloads.DownloadError)
    with pytest.raises(downloads.DownloadError):
        weights.info("no-such-weights")


RETFOUND = "YukunZhou/RETFound_mae_natureCFP/resolve/main/RETFound_mae_natureCFP.pth"


def retfound_blob(**extra) -> tuple[dict, bytes]:
    """A tiny ViT in RETFound's layout: ``{"model": state, "args": Namespace(...)}`` as the real file has."""
    import argparse
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0)
    return vit.state_dict(), as_bytes({"model": vit.state_dict(), "args": argparse.Namespace(model="vit"), **extra})


def test_hf_token_stays_on_the_hub_and_the_cache_needs_no_token(tmp_path, monkeypatch):
    state, blob = retfound_blob()
    with FileServer({"blobs/retfound": blob}) as cdn, FileServer({RETFOUND: blob}, token="hf_secret") as hub:
        hub.redirect[RETFOUND] = f"{cdn.url}/blobs/retfound"  # the hub sends the file from another host
        monkeypatch.setenv(weights.HF_ENV, hub.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        weights.pretrained_encoder("retfound-mae", token="hf_secret", cache=tmp_path, arch="vit_tiny_patch16_224",
                                   progress=False)
    assert any(auth == "Bearer hf_secret" for _, _, auth in hub.auth)
    assert cdn.requests and all(auth is None for _, _, auth in cdn.auth)  # the token never left the hub
    # now in the cache: no token, no server, offline mode — still loads
    model = weights.pretrained_encoder("retfound-mae", cache=tmp_path, arch="vit_tiny_patch16_224")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    weights.pretrained_encoder("retfound-mae", cache=tmp_path, arch="vit_tiny_patch16_224")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items() if not k.startswith("norm."))


def test_a_file_put_by_hand_needs_no_token(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    (tmp_path / "retfound-mae").mkdir()
    (tmp_path / "retfound-mae" / "RETFound_mae_natureCFP.pth").write_bytes(retfound_blob()[1])
    weights.pretrained_encoder("retfound-mae", cache=tmp_path, arch="vit_tiny_patch16_224")


def test_offline_and_missing_weights_say_what_to_do(tmp_path, monkeypatch):
    with FileServer({}) as srv:
        monkeypatch.setenv(weights.HF_ENV, srv.url)
        with pytest.raises(downloads.DownloadError, match="HTTP 404.*RETINA_HF_ENDPOINT"):
            weights.pretrained_encoder("flair-resnet50", cache=tmp_path, arch="resnet18")
    monkeypatch.setattr("time.sleep", lambda s: None)  # huggingface_hub retries a refused connection with back-off
    with pytest.raises(downloads.OfflineError, match="could not be reached.*hf download jusiro2/FLAIR model.safetensors"):
        weights.pretrained_encoder("flair-resnet50", cache=tmp_path, arch="resnet18")  # the server is gone
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(downloads.OfflineError, match="HF_HUB_OFFLINE is set.*not in"):
        weights.pretrained_encoder("retfound-mae", token="hf_x", cache=tmp_path, arch="vit_tiny_patch16_224")


class Custom:
    """Not an allowed global: a checkpoint holding one is refused, by name."""


def test_checkpoints_namespace_loads_custom_class_is_named_truncated_is_corrupt(tmp_path):
    state, blob = retfound_blob()
    (tmp_path / "ok.pth").write_bytes(blob)
    assert set(weights.read_checkpoint(tmp_path / "ok.pth")["model"]) == set(state)
    (tmp_path / "custom.pth").write_bytes(retfound_blob(extra=Custom())[1])
    with pytest.raises(weights.WeightsError, match="test_weights.Custom: this is not corruption") as err:
        weights.read_checkpoint(tmp_path / "custom.pth")
    assert "download again" not in str(err.value)
    (tmp_path / "cut.pth").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(weights.WeightsError, match="corrupt or truncated.*delete .*cut.pth and download again"):
        weights.read_checkpoint(tmp_path / "cut.pth")
    assert (tmp_path / "cut.pth").exists()  # reported, not removed behind the user's back


def test_weights_file_takes_a_file_put_by_hand_and_refuses_timm_names(tmp_path):
    from helpers import weights
    by_hand = tmp_path / "flair-resnet50" / "model.safetensors"
    by_hand.parent.mkdir()
    by_hand.write_bytes(b"x")
    assert weights.weights_file("flair-resnet50", cache=tmp_path) == by_hand  # no token, no network
    with pytest.raises(weights.WeightsError, match="pretrained_encoder"):
        weights.weights_file("imagenet-resnet50")
