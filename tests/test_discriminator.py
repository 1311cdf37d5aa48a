"""D's backbone is the teacher UNet's own encoder (same weights, frozen, always eval); heads per block and kind."""

import pytest
import torch

from sfv.discriminator import Discriminator
from sfv.teachers.svd import SVDEncoder, SVDTeacher, svd_denoise


@pytest.fixture
def teacher(tiny_pipe):
    return SVDTeacher.from_pipeline(tiny_pipe).requires_grad_(False)


def _inputs(teacher, b=2, f=4):
    g = torch.Generator().manual_seed(0)
    cond = teacher.encode_condition(torch.rand(b, 3, 32, 32, generator=g), 32, 32, generator=g)
    return torch.randn(b, f, 4, 16, 16, generator=g), torch.tensor([0.37, 5.0])[:b], cond


def test_encoder_features_are_the_unets_down_block_outputs(teacher):
    x, sigma, cond = _inputs(teacher)
    encoder = SVDEncoder(teacher.unet)
    outputs = []
    hooks = [b.register_forward_hook(lambda m, i, o: outputs.append(o[0])) for b in teacher.unet.down_blocks]
    svd_denoise(teacher.unet, x, sigma, cond)  # the full UNet, same input and σ
    for h in hooks:
        h.remove()
    features = encoder(x, sigma, cond)
    assert len(features) == len(teacher.unet.down_blocks)
    for a, b in zip(features, outputs):
        assert torch.equal(a, b)
    assert encoder.conv_in.weight is teacher.unet.conv_in.weight  # shared, not copied


def test_backbone_is_frozen_and_stays_in_eval(teacher):
    D = Discriminator(SVDEncoder(teacher.unet), 32, "both", 32)
    D.train()
    assert D.training and not D.backbone.training and not any(m.training for m in D.backbone.modules())
    assert all(not p.requires_grad for p in D.backbone.parameters())
    trainable = {id(p) for p in D.trainable_parameters()}
    assert trainable and trainable.isdisjoint({id(p) for p in teacher.unet.parameters()})


@pytest.mark.parametrize("heads, names", [("both", {"spatial0", "temporal0", "spatial1", "temporal1"}),
                                          ("spatial", {"spatial0", "spatial1"}), ("temporal", {"temporal0", "temporal1"})])
def test_heads_per_block_and_kind_with_their_layouts(teacher, heads, names):
    x, sigma, cond = _inputs(teacher)
    D = Discriminator(SVDEncoder(teacher.unet), 32, heads, 32)
    logits = D(x, sigma, cond)
    assert set(logits) == names
    for name, v in logits.items():  # tiny UNet: both blocks at 8×8 (the last block does not downsample)
        assert v.shape == ((2, 4, 8, 8) if name.startswith("spatial") else (2, 8, 8, 4))
    x.requires_grad_(True)
    sum(v.sum() for v in D(x, sigma, cond).values()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # gradients reach the input (G step, R1)


def test_conditioning_changes_the_logits(teacher):
    x, sigma, cond = _inputs(teacher)
    D = Discriminator(SVDEncoder(teacher.unet), 32, "both", 32)
    base = D(x, sigma, cond)["spatial0"]
    assert not torch.allclose(base, D(x, sigma.flip(0), cond)["spatial0"])  # σ′
    cond.image_embeds = cond.image_embeds * 0
    assert not torch.allclose(base, D(x, sigma, cond)["spatial0"])  # image embedding
    with pytest.raises(ValueError, match="heads must be"):
        Discriminator(SVDEncoder(teacher.unet), 32, "spatio", 32)


def test_labels_put_the_scalar_conditions_into_the_projection_and_off_is_the_papers_d(teacher):
    x, sigma, cond = _inputs(teacher)
    torch.manual_seed(0)
    paper = Discriminator(SVDEncoder(teacher.unet), 32, "both", 32)
    torch.manual_seed(0)
    off = Discriminator(SVDEncoder(teacher.unet), 32, "both", 32, labels=0)
    assert [n for n, _ in paper.named_parameters()] == [n for n, _ in off.named_parameters()]
    assert all(torch.equal(a, b) for a, b in zip(paper.trainable_parameters(), off.trainable_parameters()))
    D = Discriminator(SVDEncoder(teacher.unet), 32, "both", 32, labels=teacher.label_count)
    assert cond.labels().shape == (2, teacher.label_count) == (2, 3)
    extra = {n for n, _ in D.named_parameters()} - {n for n, _ in paper.named_parameters()}
    assert extra == {"cond_embed.labels.weight", "cond_embed.labels.bias"}
    e = D.condition(sigma, cond, 4)
    assert e.shape == (2, 4, 4 * 64)
    other = type(cond)(cond.image_embeds, cond.image_latents, cond.added_time_ids.clone())
    other.added_time_ids[:, 1] = 32.0  # another motion bucket: e(c) moves, D's frozen backbone sees it too
    assert not torch.allclose(e, D.condition(sigma, other, 4))
    assert torch.equal(paper.condition(sigma, cond, 4), paper.condition(sigma, other, 4))  # the paper's e(c) does not
