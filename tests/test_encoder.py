"""CLIPEncoder against numbers computed independently from the underlying transformers CLIPModel."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import CLIPTokenizer
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from clipdepth.config import CLIPEncoderConfig
from clipdepth.encoders import CLIPEncoder, EncoderOutput
from clipdepth.errors import EncoderLoadError


@pytest.fixture
def encoder(tiny_encoder_cfg: CLIPEncoderConfig) -> CLIPEncoder:
    return CLIPEncoder.from_config(tiny_encoder_cfg)


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    generator = torch.Generator().manual_seed(123)
    return torch.randn(2, 3, 56, 56, generator=generator)


def saved_folder(encoder: CLIPEncoder, folder: Path, tokenizer: CLIPTokenizer | None = None) -> Path:
    encoder.model.save_pretrained(folder)
    (tokenizer or encoder.tokenizer).save_pretrained(folder)
    return folder


def assert_same_output(a: EncoderOutput, b: EncoderOutput) -> None:
    torch.testing.assert_close(a.patch_tokens, b.patch_tokens, rtol=0, atol=0)
    torch.testing.assert_close(a.cls, b.cls, rtol=0, atol=0)


def test_geometry_and_normalisation(encoder: CLIPEncoder, pixels: torch.Tensor) -> None:
    assert (encoder.embed_dim, encoder.image_size, encoder.patch_size, encoder.grid_size) == (32, 56, 14, (4, 4))
    assert encoder.image_mean == tuple(OPENAI_CLIP_MEAN) and encoder.image_std == tuple(OPENAI_CLIP_STD)
    images = torch.rand(1, 3, 8, 8)
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(encoder.normalize(images), (images - mean) / std)
    out = encoder(pixels)
    assert out.patch_tokens.shape == (2, 4, 4, 32) and out.cls.shape == (2, 32)
    with pytest.raises(ValueError, match="56"):
        encoder(torch.zeros(1, 3, 28, 28))


def test_patch_tokens_are_projected_post_layernorm_hidden_states(encoder: CLIPEncoder, pixels: torch.Tensor) -> None:
    model = encoder.model
    hidden = model.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states[-1]
    assert hidden.shape == (2, 1 + 16, 64)
    manual = model.visual_projection(model.vision_model.post_layernorm(hidden))
    out = encoder(pixels)
    for row in range(4):
        for col in range(4):
            torch.testing.assert_close(out.patch_tokens[:, row, col], manual[:, 1 + row * 4 + col])
    # Not normalised: the head sees the raw projected tokens.
    assert not torch.allclose(out.patch_tokens.norm(dim=-1), torch.ones(2, 4, 4))


def test_cls_is_the_models_normalised_image_embedding(encoder: CLIPEncoder, pixels: torch.Tensor) -> None:
    # transformers 5 returns an output object whose pooler_output is the projected embedding.
    expected = F.normalize(encoder.model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
    torch.testing.assert_close(encoder(pixels).cls, expected)


def test_vision_tower_runs_once_per_forward(encoder: CLIPEncoder, pixels: torch.Tensor) -> None:
    calls: list[int] = []
    handle = encoder.model.vision_model.register_forward_hook(lambda *args: calls.append(1))
    try:
        encoder(pixels)
    finally:
        handle.remove()
    assert len(calls) == 1


def test_random_build_is_deterministic_and_leaves_global_rng_alone(
    tiny_encoder_cfg: CLIPEncoderConfig, encoder: CLIPEncoder, pixels: torch.Tensor
) -> None:
    rng_state = torch.random.get_rng_state()
    same = CLIPEncoder.from_config(tiny_encoder_cfg)
    other = CLIPEncoder.from_config(dataclasses.replace(tiny_encoder_cfg, seed=1))
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    assert same.fingerprint() == encoder.fingerprint() and len(encoder.fingerprint()) == 16
    assert_same_output(same(pixels), encoder(pixels))
    assert other.fingerprint() != encoder.fingerprint()
    assert not torch.allclose(other(pixels).cls, encoder(pixels).cls)


def test_random_build_logs_no_token_id_warnings(tiny_encoder_cfg: CLIPEncoderConfig, capfd: pytest.CaptureFixture[str]) -> None:
    CLIPEncoder.from_config(dataclasses.replace(tiny_encoder_cfg, seed=7))
    assert "within the vocabulary" not in capfd.readouterr().err


def test_frozen_and_stays_in_eval_mode(encoder: CLIPEncoder) -> None:
    parent = torch.nn.Sequential(encoder)
    parent.train()
    assert not encoder.training
    assert not any(module.training for module in encoder.modules())
    assert not any(p.requires_grad for p in encoder.parameters())
    assert encoder.model.config._attn_implementation == "sdpa"


def test_encode_text_gives_distinct_unit_vectors(encoder: CLIPEncoder) -> None:
    text = encoder.encode_text(["1.00 meter", "2.00 meter"])
    assert text.shape == (2, 32)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(2))
    assert not torch.allclose(text[0], text[1])
    # Same as the model's own text features of the tokenised phrase.
    ids = encoder.tokenizer(["1.00 meter"], return_tensors="pt")["input_ids"]
    expected = F.normalize(encoder.model.get_text_features(input_ids=ids).pooler_output, dim=-1)
    torch.testing.assert_close(text[:1], expected)


def test_missing_folder_names_the_folder(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-clip")
    with pytest.raises(EncoderLoadError) as info:
        CLIPEncoder.from_pretrained(missing)
    message = str(info.value)
    assert missing in message and "\n" not in message and "save_pretrained" in message


def test_folder_without_weights_names_the_folder(tmp_path: Path) -> None:
    with pytest.raises(EncoderLoadError) as info:
        CLIPEncoder.from_pretrained(str(tmp_path))
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


def test_offline_hub_id_names_the_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable once, at import.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    hub_id = "clipdepth-tests/no-such-clip"  # never in any cache
    with pytest.raises(EncoderLoadError) as info:
        CLIPEncoder.from_pretrained(hub_id)
    message = str(info.value)
    assert hub_id in message and "\n" not in message and "network" in message


def test_folder_with_empty_tokenizer_is_refused(encoder: CLIPEncoder, tmp_path: Path) -> None:
    empty = CLIPTokenizer()  # only the special tokens, as an offline load without vocabulary files gives
    folder = saved_folder(encoder, tmp_path, tokenizer=empty)
    with pytest.raises(EncoderLoadError, match="tokenizer") as info:
        CLIPEncoder.from_pretrained(str(folder))
    assert str(folder) in str(info.value) and "\n" not in str(info.value)


def test_partial_checkpoint_is_refused(encoder: CLIPEncoder, tmp_path: Path) -> None:
    # transformers would fill the absent tensor with random values without an error.
    folder = saved_folder(encoder, tmp_path)
    state = {k: v for k, v in encoder.model.state_dict().items() if k != "text_projection.weight"}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(EncoderLoadError, match="text_projection.weight"):
        CLIPEncoder.from_pretrained(str(folder))


def test_saved_folder_loads_the_same_encoder(encoder: CLIPEncoder, pixels: torch.Tensor, tmp_path: Path) -> None:
    folder = saved_folder(encoder, tmp_path)
    loaded = CLIPEncoder.from_config(CLIPEncoderConfig(name=str(folder)))
    assert loaded.description == str(folder)
    assert loaded.fingerprint() == encoder.fingerprint()
    assert_same_output(loaded(pixels), encoder(pixels))
    phrases = ["1.00 meter", "2.00 meter"]
    torch.testing.assert_close(loaded.encode_text(phrases), encoder.encode_text(phrases), rtol=0, atol=0)


def test_loading_quiets_the_hubs_retry_lines_and_restores_the_levels():
    from huggingface_hub.utils import logging as hub_logging

    from clipdepth.encoders.loading import quiet_transformers

    before = hub_logging.get_verbosity()
    with quiet_transformers():
        assert hub_logging.get_verbosity() == hub_logging.ERROR  # "Retrying in 8s" is a warning
    assert hub_logging.get_verbosity() == before
