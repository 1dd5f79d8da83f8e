"""TR2M's trainable network: shapes, init, text conditioning, gradients, to_metric, sizes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from clipdepth.config import TR2MConfig, load_config
from clipdepth.errors import ConfigError
from clipdepth.models.tr2m import GlobalHead, TR2MHead, TR2MHeadOutput, to_metric
from clipdepth.training.op_count import count_ops

DIM, TEXT_DIM, H, W, PATCH = 32, 16, 3, 4, 14


def tiny_cfg(**overrides: object) -> TR2MConfig:
    sizes = {"num_heads": 4, "neck_channels": 16, "decoder_channels": 12, "head_channels": 8, "head_hidden": 4}
    return TR2MConfig(**{**sizes, **overrides})


def tiny_head(**overrides: object) -> TR2MHead:
    torch.manual_seed(0)
    return TR2MHead(tiny_cfg(**overrides), DIM, TEXT_DIM, patch_size=PATCH)


def last_layers(head: TR2MHead) -> list[nn.Conv2d | nn.Linear]:
    """The layer that gives each raw factor (the one ``tr2m.head_init`` acts on)."""
    return [sub.net[-1] if isinstance(sub, GlobalHead) else sub.conv_out for sub in (head.scale_head, head.shift_head)]


def inputs(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, H, W, DIM, generator=g), torch.randn(batch, TEXT_DIM, generator=g)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_shapes_positivity_and_exact_zero_init() -> None:
    out = tiny_head(head_init="zero")(*inputs())
    assert out.scale.shape == out.shift.shape == (2, PATCH * H, PATCH * W)
    assert out.log_scale.shape == out.log_shift.shape == (2, PATCH * H, PATCH * W)
    assert out.pooled.shape == (2, DIM)
    assert out.pixel_features is not None and out.pixel_features.shape == (2, 12, 8 * H, 8 * W)
    assert torch.equal(out.scale, torch.full_like(out.scale, 0.01))
    assert torch.equal(out.shift, torch.full_like(out.shift, 0.01))
    assert torch.allclose(out.log_scale, torch.full_like(out.log_scale, math.log(0.01)))


@pytest.mark.parametrize("global_factor", [False, True])
def test_the_released_init_is_pytorchs_default_and_zero_differs_only_in_the_last_layers(global_factor) -> None:
    """The release's init_weights initialises nothing (scalemap_depth.py): every layer keeps PyTorch's
    default, the last ones too. A wide last layer (256 inputs) makes its distribution testable."""
    wide = {"head_hidden": 256, "global_factor": global_factor}
    released = tiny_head(**wide)
    after_released = torch.rand(3)  # the RNG stream after building: resuming must not depend on head_init
    zero = tiny_head(head_init="zero", **wide)
    assert torch.equal(torch.rand(3), after_released)
    bound = 1 / math.sqrt(256)  # kaiming_uniform(a=sqrt(5)) and the bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    for layer in last_layers(released):
        w = layer.weight.flatten()
        assert w.numel() == 256 and w.abs().max() <= bound and w.abs().max() > 0.9 * bound
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.15)  # a uniform's std
        assert 0 < layer.bias.abs().item() <= bound
    for layer in last_layers(zero):
        assert not layer.weight.any() and not layer.bias.any()
    last = {id(p) for layer in last_layers(released) for p in (layer.weight, layer.bias)}
    zero_params = dict(zero.named_parameters())
    for name, value in released.named_parameters():  # the same draws everywhere else
        assert id(value) in last or torch.equal(value, zero_params[name]), name
    out = released(*inputs())
    assert (out.scale > 0).all() and (out.shift > 0).all()
    for factor in (out.scale, out.shift):  # A = 0.01 * exp(raw): not the constant 0.01 of the zero init
        assert not torch.allclose(factor, torch.full_like(factor, 0.01))
        assert factor[0, 0, 0] != factor[1, 0, 0] if global_factor else factor.flatten(1).std(dim=1).gt(0).all()


def test_head_init_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"tr2m.head_init='kaiming': must be one of \['released', 'zero'\]"):
        load_config(overrides=["tr2m.head_init=kaiming"])


def test_heads_must_divide_the_image_dim() -> None:
    with pytest.raises(ValueError, match="num_heads"):
        tiny_head(num_heads=5)


def test_to_metric_by_hand() -> None:
    relative = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    scale, shift = torch.full((1, 2, 2), 0.5), torch.full((1, 2, 2), 0.25)
    # 0.5 * D + 0.25 = 0.75, 1.25, 1.75, 2.25
    expected = torch.tensor([[[4 / 3, 0.8], [4 / 7, 4 / 9]]])
    assert torch.allclose(to_metric(relative, scale, shift, 1e-3, 10.0), expected)
    # Clamping the denominator to [1/1.0, 1/0.5] = [1, 2]: 0.75 -> 1 and 2.25 -> 2.
    clamped = torch.tensor([[[1.0, 0.8], [4 / 7, 0.5]]])
    assert torch.allclose(to_metric(relative, scale, shift, 0.5, 1.0), clamped)


def test_to_metric_resizes_factors_with_aligned_corners() -> None:
    scale = torch.tensor([[[1.0, 3.0], [5.0, 7.0]]])  # 2x2 -> 3x3 inserts midpoints
    metric = to_metric(torch.ones(1, 3, 3), scale, torch.zeros(1, 2, 2), 0.1, 10.0)
    expected = 1.0 / torch.tensor([[[1.0, 2.0, 3.0], [3.0, 4.0, 5.0], [5.0, 6.0, 7.0]]])
    assert torch.allclose(metric, expected)


def test_to_metric_rejects_bad_range() -> None:
    with pytest.raises(ValueError):
        to_metric(torch.ones(1, 2, 2), torch.ones(1, 2, 2), torch.ones(1, 2, 2), 1.0, 1.0)


def test_global_variant() -> None:
    head = tiny_head(global_factor=True)
    assert head.decoder is None
    assert n_params(head) < n_params(tiny_head())
    out = head(*inputs())
    assert out.pixel_features is None
    assert out.scale.shape == out.shift.shape == (2, PATCH * H, PATCH * W)
    for factor in (out.scale, out.shift):
        per_image = factor.flatten(1)
        assert torch.equal(per_image, per_image[:, :1].expand_as(per_image))
        assert per_image[0, 0] != per_image[1, 0]


def test_text_changes_the_maps() -> None:
    head = tiny_head()
    tokens, text = inputs(batch=1)
    a = head(tokens, text)
    b = head(tokens, text + 1.0)
    assert not torch.allclose(a.scale, b.scale)
    assert not torch.allclose(a.shift, b.shift)


def test_cross_attention_to_one_text_token_ignores_the_query() -> None:
    block = tiny_head().block
    queries = torch.randn(1, 5, DIM)
    text = torch.randn(1, 1, DIM)
    out = block.cross_attn(queries, text, text, need_weights=False)[0]
    assert torch.allclose(out, out[:, :1].expand_as(out), atol=1e-6)


def test_block_update_depends_on_the_text() -> None:
    block = tiny_head().block
    tokens = torch.randn(1, H * W, DIM)
    delta_a = block(tokens, torch.randn(1, 1, DIM)) - tokens
    delta_b = block(tokens, torch.randn(1, 1, DIM)) - tokens
    assert not torch.allclose(delta_a, delta_b)


def test_gradients_reach_text_projection_and_decoder() -> None:
    head = tiny_head()
    out = head(*inputs())
    (out.scale.mean() + out.shift.mean()).backward()
    assert head.decoder is not None
    for p in (head.text_proj[0].weight, head.decoder.neck[0].weight, head.block.cross_attn.in_proj_weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_released_sizes_heads_and_parameter_count() -> None:
    with torch.device("meta"):  # full size without allocating it
        head = TR2MHead(TR2MConfig(), image_dim=1024, text_dim=768)
    d, t, neck, dec = 1024, 768, 192, 128
    text_proj = t * d + d
    block = 4 * (2 * d) + 2 * (4 * d * d + 4 * d) + (d * 4 * d + 4 * d) + (4 * d * d + d)  # 4 LNs, 2 attn, MLP
    neck_params = (d * neck + neck) + (neck * neck * 4 + neck) + dec * neck * 9  # 1x1, 2x2 transposed, bias-free 3x3
    stages = 2 * (2 * (dec * dec * 9 + dec) + dec * dec + dec)  # [residual unit, 1x1 conv] x 2
    heads = 2 * ((dec * 64 * 9 + 64) + (64 * 32 * 9 + 32) + (32 + 1))
    assert text_proj + block + neck_params + stages + heads == 18_959_746  # the released count
    assert n_params(head) == 18_959_746
    assert head.block.self_attn.num_heads == 8 and head.block.cross_attn.num_heads == 8
    assert head.decoder.neck[2].bias is None


def _head_by_the_modules(head: TR2MHead, tokens: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The head's forward written with the modules' own calls: ``nn.MultiheadAttention``, each map head
    on its own, QuickGELU as x * sigmoid(1.702 x) and A = 0.01 * exp(head_A) (docs/tr2m.md)."""
    b, h, w, dim = tokens.shape
    block = head.block
    t = head.text_proj[0](text)
    t = (t * torch.sigmoid(1.702 * t))[:, None]
    x = tokens.reshape(b, h * w, dim)
    y = block.norm_self(x)
    x = x + block.self_attn(y, y, y, need_weights=False)[0]
    q, kv = block.norm_query(x), block.norm_text(t)
    x = x + block.cross_attn(q, kv, kv, need_weights=False)[0]
    y = block.mlp[0](block.norm_mlp(x))
    x = x + block.mlp[2](y * torch.sigmoid(1.702 * y))
    features = head.decoder(x.transpose(1, 2).reshape(b, dim, h, w))
    size = (PATCH * h, PATCH * w)

    def raw(m):
        y = nn.functional.interpolate(m.conv_in(features), size=size, mode="bilinear", align_corners=True)
        return m.conv_out(torch.relu(m.conv_hidden(y)))[:, 0]

    return 0.01 * torch.exp(raw(head.scale_head)), 0.01 * torch.exp(raw(head.shift_head)), x.mean(1), features


def test_the_head_equals_its_modules_calls_in_fewer_kernels() -> None:
    """The forward runs attention from nn.MultiheadAttention's parameters and both map heads as grouped
    convolutions: the same outputs and parameter gradients as the modules' own calls, with at least a
    fifth fewer kernels forward and backward."""
    head = tiny_head()
    tokens, text = inputs()
    weights = [torch.randn(PATCH * H, PATCH * W), torch.randn(PATCH * H, PATCH * W), torch.randn(DIM), torch.randn(12, 8 * H, 8 * W)]
    results = []
    for forward in (lambda: _head_by_the_modules(head, tokens, text), lambda: head(tokens, text)):
        head.zero_grad(set_to_none=True)
        with count_ops() as counted:
            out = forward()
            if isinstance(out, TR2MHeadOutput):
                out = (out.scale, out.shift, out.pooled, out.pixel_features)
            sum((o * wt).sum() for o, wt in zip(out, weights)).backward()
        results.append((out, {n: p.grad.clone() for n, p in head.named_parameters()}, counted.count.kernels))
    (ref, ref_grads, ref_kernels), (new, new_grads, new_kernels) = results
    for a, b in zip(ref, new):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    for name, grad in ref_grads.items():
        assert torch.allclose(new_grads[name], grad, rtol=1e-4, atol=1e-6), name
    assert new_kernels <= 0.8 * ref_kernels, (new_kernels, ref_kernels)
