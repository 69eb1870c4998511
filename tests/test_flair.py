"""Chapter 5's FLAIR pieces: the loss (by hand and against open_clip), the published layout, the text embedding,
the prototype quirk, the offline tokenizer, the dictionary reader; the released model's regression where present."""
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.chapters import ch05
from helpers.methods import flair as FL

pytest.importorskip("transformers")


def test_loss_equals_a_hand_calculation_and_open_clip():
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=1)
    txt = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=1)
    scale = 10.0
    logits_per_text = scale * txt @ img.t()
    ours = FL.flair_loss(logits_per_text, FL.soft_targets(torch.arange(6)))
    lp_t = logits_per_text.log_softmax(1).diag().mean()
    lp_i = logits_per_text.t().log_softmax(1).diag().mean()
    assert float(ours) == pytest.approx(float(-(lp_t + lp_i) / 2), rel=1e-5)
    open_clip = pytest.importorskip("open_clip")
    ref = open_clip.loss.ClipLoss()(img, txt, torch.tensor(scale))
    assert float(ours) == pytest.approx(float(ref), rel=1e-5)


def test_soft_targets_spread_over_pairs_with_the_same_category():
    t = FL.soft_targets(torch.tensor([0, 1, 0, 2, 0]))
    assert torch.allclose(t.sum(1), torch.ones(5))
    assert torch.allclose(t[0], torch.tensor([1 / 3, 0, 1 / 3, 0, 1 / 3]))
    assert t[1, 1] == 1 and t[3, 3] == 1


def expected_flair_layout():
    """FLAIR's checkpoint layout, written from its published modules: torchvision's ResNet-50 without ``fc`` under
    ``vision_model.model``, Bio_ClinicalBERT under ``text_model.model``, two bias-free projections, ``logit_scale``."""
    import torchvision
    from transformers import BertModel
    layout = {f"vision_model.model.{k}": tuple(v.shape) for k, v in torchvision.models.resnet50().state_dict().items()
              if not k.startswith("fc.")}
    layout.update({f"text_model.model.{k}": tuple(v.shape)
                   for k, v in BertModel(FL.bio_clinical_bert_config()).state_dict().items()})
    layout["vision_model.projection_head_vision.projection.weight"] = (512, 2048)
    layout["text_model.projection_head_text.projection.weight"] = (512, 768)
    layout["logit_scale"] = ()
    return layout


def test_the_model_maps_one_to_one_onto_flairs_checkpoint_layout(capsys):
    model = FL.faithful_flair()
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == expected_flair_layout()
    g = torch.Generator().manual_seed(1)
    state = {k: torch.randn(s, generator=g) if s else torch.tensor(3.9) for k, s in expected_flair_layout().items()}
    state["text_model.model.embeddings.position_ids"] = torch.arange(512)[None]  # saved by older transformers
    report = FL.load_official(model, state)
    assert report["missing"] == [] and report["unexpected"] == [] and report["shape_mismatch"] == []
    assert torch.equal(model.logit_scale.data, torch.tensor(3.9))
    assert torch.equal(model.text_model.projection_head_text.projection.weight,
                       state["text_model.projection_head_text.projection.weight"])


def tiny():
    torch.manual_seed(0)
    text = FL.mini_text_model(vocab_size=50, hidden=16, layers=2, heads=2, max_length=16, proj_dim=8)
    vision = FL.VisionModel(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 10)), 10, 8)
    return FL.FLAIRModel(vision, text)


def test_text_embedding_is_flairs_mean_over_layers_and_tokens_padding_included():
    model = tiny().eval()
    ids = torch.tensor([[2, 7, 9, 3, 0, 0], [2, 5, 3, 0, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        h = model.text_model.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        pooled = ((h[1] + h[2] + h[-1]) / 3).mean(1)  # every position, padding too
        want = model.text_model.projection_head_text(pooled)
        got = model.text_model(ids, mask)
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(got.norm(dim=1), torch.ones(2), atol=1e-5)


def test_logit_scale_is_clamped_at_100():
    model = tiny()
    model.logit_scale.data = torch.tensor(10.0)
    a = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)
    logits = model.compute_logits(a, a)
    assert float(model.logit_scale.detach()) == pytest.approx(FL.LOGIT_SCALE_MAX)
    assert torch.allclose(logits.diag(), torch.full((3,), math.exp(FL.LOGIT_SCALE_MAX)), rtol=1e-4)


def test_tokenizer_is_built_offline_and_a_new_word_is_unknown_to_it():
    texts = ["scattered microaneurysms and new vessels", "drusen around the macula", "normal fundus."] * 20
    tok = FL.build_tokenizer(texts, vocab_size=120)
    ids, mask = FL.encode(tok, ["new vessels", "glaucoma suspected here"], max_length=12)
    assert ids.shape == mask.shape and ids[0, 0] == tok.token_to_id("[CLS]")
    assert mask[0].sum() < mask[1].sum() and ids[0, mask[0].sum():].eq(tok.token_to_id("[PAD]")).all()
    known = tok.encode("new vessels").tokens
    assert known == ["[CLS]", "new", "vessels", "[SEP]"]
    assert "glaucoma" not in tok.get_vocab()  # never in the training text: pieces or [UNK], no word of its own


def test_prototypes_are_means_not_renormalised_and_that_changes_predictions():
    class Fixed(torch.nn.Module):
        """A stand-in text tower returning a fixed unit embedding per prompt."""
        def __init__(self, table):
            super().__init__()
            self.table, self.w = table, torch.nn.Parameter(torch.zeros(1))

    emb = {"A fundus photograph of a": torch.tensor([1.0, 0.0]), "A fundus photograph of b": torch.tensor([0.0, 1.0]),
           "A fundus photograph of c": torch.tensor([0.8, 0.6])}

    def text_embeddings(model, tok, texts, max_length=64):
        return torch.stack([emb[t] for t in texts])

    orig = FL.text_embeddings
    FL.text_embeddings = text_embeddings
    try:
        classes = {"spread": ["a", "b"], "tight": ["c"]}
        raw = FL.class_prototypes(None, None, classes)
        unit = FL.class_prototypes(None, None, classes, renormalize=True)
    finally:
        FL.text_embeddings = orig
    assert torch.allclose(raw[0], torch.tensor([0.5, 0.5])) and raw[0].norm() < 1  # the mean, shorter than 1
    assert torch.allclose(unit.norm(dim=1), torch.ones(2))
    image = torch.nn.functional.normalize(torch.tensor([[0.75, 0.66]]), dim=1)
    model = tiny()
    assert FL.zero_shot(model, image, raw).argmax(1).item() == 1      # FLAIR's quirk: the short prototype loses
    assert FL.zero_shot(model, image, unit).argmax(1).item() == 0     # re-normalised, the spread class wins


def test_knowledge_classes_append_the_class_name_as_flair_does():
    names = FL.knowledge_classes("glaucoma", knowledge=False)
    assert names == {"no glaucoma": ["no glaucoma"], "glaucoma": ["glaucoma"]}
    know = FL.knowledge_classes("glaucoma")
    assert know["glaucoma"][-1] == "glaucoma" and "an enlarged optic cup" in know["glaucoma"]
    assert FL.strip_impression("OD fundus: New vessels. Impression: proliferative DR.") == "OD fundus: New vessels."


def test_flairs_dictionary_is_read_as_a_literal_never_executed(tmp_path):
    source = ("import os\nos.system('touch " + str(tmp_path / "ran") + "')\n"
              "definitions = {'no diabetic retinopathy': ['no microaneurysms'], 'glaucoma': ['large cup']}\n")
    d = FL.read_flair_dictionary(source)
    assert d["glaucoma"] == ["large cup"] and not (tmp_path / "ran").exists()
    with pytest.raises(ValueError, match="definitions"):
        FL.read_flair_dictionary("x = 1\n")


def test_mini_flair_learns_to_match_images_with_their_reports(tmp_path, monkeypatch):
    from helpers import data
    monkeypatch.setenv("RETINA_CACHE", str(tmp_path))
    table = data.load("synthretina", size=32, n_train=128, n_valid=32, n_test=32, seed=0, progress=False)
    knobs = {"encoder": "small_cnn_narrow", "image_size": 32, "batch_size": 32, "lr": 3e-3, "epochs": 4,
             "vocab_size": 200, "max_length": 48, "text_hidden": 32, "text_layers": 2, "text_heads": 2, "proj_dim": 32}
    model, tok, hist = ch05.train_mini(table, knobs, 0, "cpu", bar=False)
    assert np.mean(hist["train"][-4:]) < np.mean(hist["train"][:4])
    again, tok2, h2 = ch05.train_mini(table, knobs, 0, "cpu", bar=False)
    assert h2["loaded"] and tok2.get_vocab() == tok.get_vocab()
    assert "impression" not in tok.get_vocab() and "glaucoma" not in tok.get_vocab()


SAMPLE = Path(os.environ.get("RETINA_CACHE", Path.home() / ".cache" / "retina-book")) / "weights" / "flair-resnet50"


@pytest.mark.skipif(not ((SAMPLE / "model.safetensors").exists() and (SAMPLE / "sample_macular_hole.png").exists()),
                    reason="FLAIR's released weights and README sample image are not on this machine (they need "
                           "internet: put model.safetensors and sample_macular_hole.png in $RETINA_CACHE/weights/"
                           "flair-resnet50)")
def test_released_flair_reproduces_the_readme_example():  # pragma: no cover - needs the real weights
    from PIL import Image
    from helpers.views import FUNDUS_MEAN, FUNDUS_STD
    model = FL.official_flair()
    tok = FL.bio_clinical_tokenizer()
    img = np.asarray(Image.open(SAMPLE / "sample_macular_hole.png").convert("RGB"), np.float32) / 255
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    scale = 512 / max(x.shape[-2:])
    x = torch.nn.functional.interpolate(x, size=(int(x.shape[-2] * scale), int(x.shape[-1] * scale)),
                                        mode="bilinear", antialias=True)
    x = torch.nn.functional.pad(x, (0, 512 - x.shape[-1], 0, 512 - x.shape[-2]))
    x = (x - torch.tensor(FUNDUS_MEAN).view(1, 3, 1, 1)) / torch.tensor(FUNDUS_STD).view(1, 3, 1, 1)
    names = ["normal", "healthy", "macular edema", "diabetic retinopathy", "glaucoma", "macular hole", "lesion",
             "lesion in the macula"]
    protos = torch.stack([FL.text_embeddings(model, tok, FL.prompts([n]))[0] for n in names])
    probs = FL.zero_shot(model, FL.image_embeddings(model, x), protos)[0]
    assert names[int(probs.argmax())] == "lesion in the macula"
    assert 0.93 <= float(probs.max()) <= 0.98  # the README gives 0.948 (one version) and 0.962 (another)
