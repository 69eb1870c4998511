"""FLAIR as fastai pieces: a faithful image–text model, its loss, expert-knowledge zero-shot, and a mini-FLAIR.

For chapter 5 ("FLAIR zero-shot"). The model follows the published architecture (Silva-Rodríguez et al., Medical
Image Analysis 2025) with the same module names, so a released checkpoint's keys map one-to-one: a vision tower
(``vision_model.model``: ResNet-50, or any book encoder in the mini version) and a text tower
(``text_model.model``: transformers' ``BertModel``, Bio_ClinicalBERT's configuration), each followed by a
``ProjectionLayer`` (L2-normalise, a linear map without bias, L2-normalise again), and a learnable
``logit_scale`` clamped to [0, ln 100]. The text embedding is FLAIR's: the mean over tokens — padding included, as
in the original — of the mean of the first, second and last hidden layers. Zero-shot as in FLAIR: each class's
descriptions become "A fundus photograph of <description>", and the class prototype is the **mean of their
embeddings, not re-normalised** (a quirk of the original that chapter 5 measures). Same shape as
:mod:`helpers.methods.simclr`: a plain loss a student can replace, a Callback, ``flair_learner``.
"""
from __future__ import annotations

import ast

import fastai.callback.all  # noqa: F401
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
import transformers  # BERT loads on first use (the faithful FLAIR of gpu/full)
from fastai.callback.core import Callback
from fastai.learner import Learner
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from torch import nn

from ..profiles import architecture
from ..runs import mixed_precision
from ..weights import expect_fundus_input, info, load_into, read_checkpoint, weights_file

CAPTION = "A fundus photograph of [CLS]"
LOGIT_SCALE_MAX = 4.6052  # ln(100): FLAIR clamps the learnable temperature to at most 100


# --- the model -----------------------------------------------------------------------------------------------------

class ProjectionLayer(nn.Module):
    """FLAIR's projection: L2-normalise the tower's output, project it (no bias), L2-normalise the projection."""

    def __init__(self, layer: nn.Linear, projection: bool = True, norm: bool = True):
        super().__init__()
        self.apply_projection, self.norm_projection = projection, norm
        self.norm_modality = bool(projection and norm)
        self.projection = layer

    def forward(self, x):
        if self.norm_modality:
            x = x / x.norm(dim=-1, keepdim=True)
        if self.apply_projection:
            x = self.projection(x)
            if self.norm_projection:
                x = x / x.norm(dim=-1, keepdim=True)
        return x


class VisionModel(nn.Module):
    """An image tower: ``model`` (pooled features of size ``dim``) then ``projection_head_vision``."""

    def __init__(self, model: nn.Module, dim: int, proj_dim: int = 512):
        super().__init__()
        self.model = model
        self.projection_head_vision = ProjectionLayer(nn.Linear(dim, proj_dim, bias=False))

    def forward(self, images):
        return self.projection_head_vision(self.model(images))


class TextModel(nn.Module):
    """A text tower: a ``BertModel`` whose first, second and last hidden layers are averaged (then over the tokens,
    padding included, as FLAIR does), then ``projection_head_text``."""

    def __init__(self, model: nn.Module, proj_dim: int = 512):
        super().__init__()
        self.model = model
        self.projection_head_text = ProjectionLayer(nn.Linear(model.config.hidden_size, proj_dim, bias=False))

    def forward(self, input_ids, attention_mask):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        h = out.hidden_states
        embed = torch.stack([h[1], h[2], h[-1]]).permute(1, 0, 2, 3).mean(2).mean(1)
        return self.projection_head_text(embed)


class FLAIRModel(nn.Module):
    """Both towers and the learnable ``logit_scale`` (initialised at ln(1 / 0.07)), with FLAIR's module names."""

    def __init__(self, vision_model: VisionModel, text_model: TextModel, logit_scale_init: float = 0.07):
        super().__init__()
        self.vision_model, self.text_model = vision_model, text_model
        self.logit_scale = nn.Parameter(torch.log(torch.tensor(1 / logit_scale_init)))

    def compute_logits(self, img_emb, text_emb):
        """``logits_per_image`` = scale · image · textᵀ, the scale clamped to [1, 100] in place as in FLAIR."""
        self.logit_scale.data = torch.clamp(self.logit_scale.data, 0, LOGIT_SCALE_MAX)
        return (text_emb @ img_emb.t() * self.logit_scale.exp()).t()

    def forward(self, images, input_ids, attention_mask):
        """``logits_per_text`` ``[n_texts, n_images]`` for a batch of image–report pairs (what the loss reads)."""
        return self.compute_logits(self.vision_model(images), self.text_model(input_ids, attention_mask)).t()


def bio_clinical_bert_config(**changes):
    """The configuration of Bio_ClinicalBERT (BERT-base, cased vocabulary of 28,996), the text tower FLAIR loads."""
    base = dict(vocab_size=28996, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2)
    return transformers.BertConfig(**{**base, **changes})


def faithful_flair(proj_dim: int = 512) -> FLAIRModel:
    """FLAIR's published architecture, randomly initialised: torchvision's ResNet-50 (its ``fc`` an identity) and a
    BERT-base text tower, 512-d projections. Its state-dict keys and shapes are those of FLAIR's checkpoint."""
    shrink = architecture("torchvision-resnet50")  # {} but in the rehearsal profile
    resnet = (torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, **shrink) if shrink else
              torchvision.models.resnet50(weights=None))
    resnet.fc = nn.Identity()
    text = transformers.BertModel(bio_clinical_bert_config(**architecture("bert-base")))
    return FLAIRModel(VisionModel(resnet, 2048, proj_dim), TextModel(text, proj_dim))


def load_official(model: FLAIRModel, state: dict) -> dict:
    """Load a FLAIR checkpoint's state dict (keys one-to-one with :func:`faithful_flair`); report what did not match
    (old transformers versions saved ``embeddings.position_ids``, which newer ones do not keep)."""
    state = {k: v for k, v in state.items() if not k.endswith("embeddings.position_ids")}
    return load_into(model, state, "flair")


# --- the loss ------------------------------------------------------------------------------------------------------

def flair_loss(logits_per_text: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """FLAIR's symmetric cross-entropy: texts → images and images → texts, averaged. ``target`` is FLAIR's soft
    target — row i spreads its mass over the pairs whose category equals pair i's (the identity when every pair is
    its own category, which is CLIP's loss)."""
    return (F.cross_entropy(logits_per_text, target) + F.cross_entropy(logits_per_text.t(), target)) / 2


def soft_targets(categories: torch.Tensor) -> torch.Tensor:
    """FLAIR's targets: pairs with the same category are positives for each other, each row normalised to sum 1."""
    same = (categories[:, None] == categories[None, :]).float()
    return same / same.sum(1, keepdim=True)


# --- text: a tokenizer built here, and the prompts -----------------------------------------------------------------

def build_tokenizer(texts, vocab_size: int = 400):
    """A WordPiece tokenizer (the kind BERT uses) trained on ``texts`` with the ``tokenizers`` library, offline:
    lower-cased, ``[CLS] … [SEP]`` around every text, ``[PAD]`` = 0. Words it never saw become known pieces or
    ``[UNK]`` — which is what a category name absent from the training text is to the model."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tok.train_from_iterator(list(texts), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[
        ("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    return tok


def encode(tok, texts, max_length: int = 64):
    """``(input_ids, attention_mask)`` for ``texts``, padded to the longest (at most ``max_length`` tokens)."""
    tok.enable_truncation(max_length)
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
    enc = tok.encode_batch(list(texts))
    return (torch.tensor([e.ids for e in enc], dtype=torch.long),
            torch.tensor([e.attention_mask for e in enc], dtype=torch.long))


def prompts(descriptions, caption: str = CAPTION) -> list:
    """FLAIR's prompts: each description put in the caption template ("A fundus photograph of …")."""
    return [caption.replace("[CLS]", d) for d in descriptions]


@torch.no_grad()
def text_embeddings(model: FLAIRModel, tok, texts, max_length: int | None = None) -> torch.Tensor:
    """Projected text embeddings of ``texts`` (at most ``max_length`` tokens, by default the text tower's limit)."""
    device = next(model.parameters()).device
    ids, mask = encode(tok, texts, max_length or model.text_model.model.config.max_position_embeddings)
    return model.eval().text_model(ids.to(device), mask.to(device)).cpu()


@torch.no_grad()
def class_prototypes(model: FLAIRModel, tok, classes: dict, renormalize: bool = False, max_length: int | None = None):
    """One text prototype per class ``{name: [descriptions]}``: the mean of its prompts' embeddings. FLAIR does not
    re-normalise that mean (``renormalize=False``), so a class described by disagreeing descriptions gets a shorter
    prototype and lower logits; ``renormalize=True`` is the textbook version."""
    protos = []
    for descs in classes.values():
        p = text_embeddings(model, tok, prompts(descs), max_length).mean(0)
        protos.append(p / p.norm() if renormalize else p)
    return torch.stack(protos)


@torch.no_grad()
def image_embeddings(model: FLAIRModel, images: torch.Tensor, bs: int = 256) -> torch.Tensor:
    """Projected, normalised embeddings of images already normalised as the vision tower expects."""
    device = next(model.parameters()).device
    model = model.eval()
    return torch.cat([model.vision_model(images[i:i + bs].to(device)).cpu() for i in range(0, len(images), bs)])


def zero_shot(model: FLAIRModel, img_emb: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Class probabilities: softmax over classes of ``logit_scale · image · prototype`` (FLAIR's zero-shot)."""
    with torch.no_grad():
        scale = model.logit_scale.detach().clamp(0, LOGIT_SCALE_MAX).exp().to(img_emb.device)
        return (img_emb @ prototypes.to(img_emb.device).t() * scale).softmax(1)


# --- the book's knowledge dictionary for SynthRetina's categories --------------------------------------------------

KNOWLEDGE = {
    # ICDR (international clinical DR scale), as SynthRetina draws it
    "dr_grade": {"no diabetic retinopathy": ["normal fundus", "healthy retina, no lesions"],
                 "mild diabetic retinopathy": ["a few microaneurysms", "scattered microaneurysms"],
                 "moderate diabetic retinopathy": ["dot and blot haemorrhages", "hard exudates near the macula",
                                                   "scattered microaneurysms"],
                 "severe diabetic retinopathy": ["intraretinal blot haemorrhages", "several dot haemorrhages",
                                                 "dot and blot haemorrhages", "exudates at the posterior pole"],
                 "proliferative diabetic retinopathy": ["new vessels", "neovascularisation",
                                                        "fine tangled new vessels"]},
    # Keith-Wagener-Barker
    "hr_grade": {"no hypertensive retinopathy": ["normal fundus", "healthy retina, no lesions"],
                 "grade 1 hypertensive retinopathy": ["generalised arteriolar narrowing", "narrow arterioles"],
                 "grade 2 hypertensive retinopathy": ["arteriovenous nicking", "AV nipping at crossings",
                                                      "narrow arterioles"],
                 "grade 3 hypertensive retinopathy": ["flame-shaped haemorrhages near the disc", "cotton-wool spots",
                                                      "splinter haemorrhages"],
                 "grade 4 hypertensive retinopathy": ["a swollen optic disc with blurred margins", "papilloedema",
                                                      "disc oedema"]},
    # cup-to-disc ratio >= 0.6
    "glaucoma": {"no glaucoma": ["normal fundus", "healthy retina, no lesions"],
                 "glaucoma": ["an enlarged optic cup", "increased cup-to-disc ratio", "cupping of the optic disc"]},
    # five or more drusen
    "amd": {"no age-related macular degeneration": ["normal fundus", "healthy retina, no lesions"],
            "age-related macular degeneration": ["drusen around the macula", "macular drusen",
                                                 "multiple yellow drusen"]},
}


def knowledge_classes(task: str, knowledge: bool = True, dictionary: dict | None = None) -> dict:
    """``{class name: descriptions}`` for zero-shot on ``task``: the class name alone, or (``knowledge``) the
    dictionary's descriptions with the class name appended when absent — as FLAIR's ``compute_text_embeddings``."""
    d = (dictionary or KNOWLEDGE)[task]
    if not knowledge:
        return {name: [name] for name in d}
    return {name: list(descs) + ([name] if name not in descs else []) for name, descs in d.items()}


def strip_impression(report: str) -> str:
    """A SynthRetina report without its "Impression: …" sentence, so no diagnosis name reaches the training text."""
    return report.split(" Impression:")[0].strip()


def read_flair_dictionary(source: str) -> dict:
    """FLAIR's own knowledge dictionary from the text of its published ``dictionary.py`` — parsed as a literal with
    :mod:`ast` (``definitions = {...}``), never executed."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "definitions" for t in node.targets):
            return ast.literal_eval(node.value)
    raise ValueError("no `definitions = {...}` literal in that source")


# --- mini-FLAIR: the fastai pieces ---------------------------------------------------------------------------------

class FLAIRBatch(Callback):
    """``before_batch``: the batch's row ids become the reports' tokens and FLAIR's soft targets (pairs with the
    same findings are positives for each other)."""
    order = 1

    def __init__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, categories: torch.Tensor):
        super().__init__()
        self.ids, self.mask, self.cats = input_ids, attention_mask, categories

    def before_batch(self):
        rows = self.learn.yb[0].long().view(-1).cpu()
        dev = self.learn.xb[0].device
        self.learn.xb = (self.learn.xb[0], self.ids[rows].to(dev), self.mask[rows].to(dev))
        self.learn.yb = (soft_targets(self.cats[rows]).to(dev),)


def mini_text_model(vocab_size: int, hidden: int = 64, layers: int = 2, heads: int = 2, max_length: int = 64,
                    proj_dim: int = 64) -> TextModel:
    """A small BERT (transformers' ``BertModel``, the same class as FLAIR's Bio_ClinicalBERT) for the offline model."""
    cfg = bio_clinical_bert_config(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                                   num_attention_heads=heads, intermediate_size=4 * hidden,
                                   max_position_embeddings=max_length)
    return TextModel(transformers.BertModel(cfg), proj_dim)


def flair_learner(dls, encoder: nn.Module, text_model: TextModel, input_ids, attention_mask, categories,
                  proj_dim: int = 64, loss_fn=None, wd: float = 1e-4, cbs=None):
    """A fastai Learner for FLAIR's image–text pretraining. ``dls`` yields (image, row id); the rows index
    ``input_ids``/``attention_mask`` (each report, tokenized once) and ``categories`` (for the soft targets).
    ``loss_fn(logits_per_text, target)`` replaces :func:`flair_loss`."""
    model = FLAIRModel(VisionModel(encoder, int(encoder.num_features), proj_dim), text_model)
    learn = Learner(dls, model, loss_func=loss_fn or flair_loss,
                    cbs=[FLAIRBatch(input_ids, attention_mask, categories)] + list(cbs or []), wd=wd)
    learn = mixed_precision(learn)  # bf16 on recent GPUs, fp16 on older ones, none on a CPU
    return learn


def report_categories(table) -> torch.Tensor:
    """One category id per row: the set of findings its report names (FLAIR's ``sel_category``)."""
    cols = sorted(c for c in table.labels.columns if c.startswith("has_"))
    keys = table.labels[cols].astype(int).astype(str).agg("".join, axis=1)
    return torch.from_numpy(keys.astype("category").cat.codes.to_numpy().astype(np.int64))


# --- the released model (gpu / full) -------------------------------------------------------------------------------

def official_flair(token: str | None = None, cache=None, progress: bool = True) -> FLAIRModel:
    """FLAIR's released model (both towers) through :mod:`helpers.weights` (entry ``flair-resnet50``; read with
    ``torch.load(weights_only=True)``), the key mapping reported. It takes the book's fundus-normalised images: the
    forward pre-hook of :func:`helpers.weights.expect_fundus_input` turns them into FLAIR's plain [0, 1] pixels."""
    w = info("flair-resnet50")
    dest = weights_file(w.name, token, cache, progress)  # by hand, the hub cache, or hf_hub_download
    model = faithful_flair()
    load_official(model, read_checkpoint(dest))
    # on the ResNet itself, so that its features (chapter 5's few-shot probes) get [0, 1] pixels as well
    expect_fundus_input(model.vision_model.model, w)
    return model.eval()


def bio_clinical_tokenizer():
    """Bio_ClinicalBERT's tokenizer (the vocabulary FLAIR's text tower was trained with), from the Hugging Face hub
    (``gpu``/``full``), as a ``tokenizers.Tokenizer`` that :func:`encode` accepts."""
    return transformers.AutoTokenizer.from_pretrained("emilyalsentzer/Bio_ClinicalBERT").backend_tokenizer
