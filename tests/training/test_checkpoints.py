"""Official SAM checkpoints, SPT safetensors weights, full-mode weights, and their errors."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from samspt.runtime.errors import CheckpointError, CheckpointNotFoundError, ModelTypeMismatchError
from samspt.training.checkpoints import (
    apply_spt_weights,
    build_model,
    load_sam_weights,
    load_spt_model,
    read_spt_weights,
    read_state_dict,
    save_spt_weights,
)
from samspt.training.modeling.config import LoraConfig, get_config
from samspt.training.modeling.model import SptSam

from ..conftest import randomize_spt_


@pytest.fixture(scope="module")
def vit_b_checkpoint(tmp_path_factory):
    """An official-format SAM vit_b checkpoint: segment-anything's registry, random weights."""
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    sam = sam_model_registry["vit_b"]()
    path = tmp_path_factory.mktemp("sam") / "sam_vit_b_random.pth"
    torch.save(sam.state_dict(), path)
    return path, sam.state_dict()


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_sam):
    path = tmp_path / "sam_tiny.pth"
    torch.save(tiny_sam.state_dict(), path)
    return path


def _run(model, config, seed=0):
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(1, 3, config.image_size, config.image_size, generator=gen)
    coords = torch.tensor([[[4.0, 4.0], [50.0, 40.0]], [[10.0, 3.0], [20.0, 60.0]]])
    labels = torch.tensor([[2.0, 3.0], [2.0, 3.0]])
    with torch.no_grad():
        return model.eval()(image, coords, labels)


# ----------------------------------------------------------------------- official SAM files
def test_official_vit_b_checkpoint_loads_exactly(vit_b_checkpoint):
    path, reference = vit_b_checkpoint
    model = build_model("vit_b", path)
    state = model.state_dict()
    for key, value in reference.items():
        if key.startswith("mask_decoder."):
            rest = key[len("mask_decoder."):]
            assert torch.equal(state["draft_decoder." + rest], value), key
            assert torch.equal(state["refine_decoder." + rest], value), key
        else:
            assert torch.equal(state[key], value), key


def test_wrong_model_type_is_named(vit_b_checkpoint, tiny_config):
    path, _ = vit_b_checkpoint
    with pytest.raises(ModelTypeMismatchError, match="vit_b checkpoint, but the model is tiny"):
        load_sam_weights(SptSam(tiny_config), path)


def test_truncated_checkpoint_is_refused(vit_b_checkpoint, tmp_path):
    path, _ = vit_b_checkpoint
    cut = tmp_path / "cut.pth"
    with open(path, "rb") as src:
        cut.write_bytes(src.read(path.stat().st_size // 2))
    with pytest.raises(CheckpointError, match="truncated"):
        read_state_dict(cut)


@pytest.mark.parametrize("content,match", [
    (b"", "empty"),
    (b"hello, this is not a checkpoint\n" * 10, "not a PyTorch checkpoint|cannot be read"),
])
def test_foreign_files_are_refused(tmp_path, content, match):
    path = tmp_path / "foreign.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        read_state_dict(path)


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_objects_are_never_unpickled(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "payload": _Payload()}, path)
    with pytest.raises(CheckpointError, match="refuses to unpickle"):
        read_state_dict(path)
    assert "must never run" not in capsys.readouterr().out


def test_missing_file_has_its_own_error(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pth")


def test_missing_and_unexpected_keys_are_named(tiny_sam, tiny_config):
    state = dict(tiny_sam.state_dict())
    del state["mask_decoder.iou_token.weight"]
    state["mask_decoder.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="missing 2 keys.*iou_token.*unexpected 2 keys"):
        load_sam_weights(SptSam(tiny_config), state)


def test_spt_weights_are_not_a_sam_checkpoint(tmp_path, tiny_spt):
    path = save_spt_weights(tiny_spt, tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="not a SAM checkpoint"):
        load_sam_weights(SptSam(tiny_spt.config), path)


def test_safetensors_sam_checkpoint_loads(tmp_path, tiny_sam, tiny_config):
    path = tmp_path / "sam_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_sam.state_dict().items()}, str(path))
    model = build_model(tiny_config, path)
    assert torch.equal(model.state_dict()["image_encoder.pos_embed"],
                       tiny_sam.state_dict()["image_encoder.pos_embed"])


# ----------------------------------------------------------------------------- SPT weights
def test_spt_weights_round_trip(tmp_path, tiny_spt, tiny_checkpoint, tiny_config):
    randomize_spt_(tiny_spt)
    path = save_spt_weights(tiny_spt, tmp_path / "spt.safetensors")
    tensors, info = read_spt_weights(path)
    assert set(tensors) == set(tiny_spt.spt_state_dict())  # only the trained tensors
    assert (info.mode, info.config, info.lora) == ("spt", tiny_config, LoraConfig(8, 1.0))
    loaded = load_spt_model(path, tiny_checkpoint)
    a, b = _run(tiny_spt, tiny_config), _run(loaded, tiny_config)
    torch.testing.assert_close(a.logits, b.logits, atol=0, rtol=0)
    torch.testing.assert_close(a.draft_logits, b.draft_logits, atol=0, rtol=0)


def test_full_mode_weights_stand_alone(tmp_path, tiny_spt, tiny_config):
    randomize_spt_(tiny_spt)
    path = save_spt_weights(tiny_spt, tmp_path / "full.safetensors", mode="full",
                            dtype=torch.float16)
    tensors, info = read_spt_weights(path)
    assert info.mode == "full" and tensors["image_encoder.pos_embed"].dtype == torch.float16
    loaded = load_spt_model(path)
    torch.testing.assert_close(_run(loaded, tiny_config).logits,
                               _run(tiny_spt, tiny_config).logits, atol=2e-2, rtol=2e-2)


def test_spt_weights_without_their_sam_checkpoint_say_so(tmp_path, tiny_spt):
    path = save_spt_weights(tiny_spt, tmp_path / "spt.safetensors")
    with pytest.raises(CheckpointError, match="also give the SAM checkpoint"):
        load_spt_model(path)


def test_spt_weights_for_another_model_are_refused(tmp_path, tiny_spt):
    path = save_spt_weights(tiny_spt, tmp_path / "spt.safetensors")
    tensors, info = read_spt_weights(path)
    with pytest.raises(ModelTypeMismatchError, match="trained for tiny.*small"):
        apply_spt_weights(SptSam(get_config("small")), tensors, info)
    with pytest.raises(CheckpointError, match="rank 8"):
        apply_spt_weights(SptSam(tiny_spt.config, LoraConfig(rank=4)), tensors, info)


def test_spt_weights_with_missing_tensors_are_named(tmp_path, tiny_spt):
    tensors, info = read_spt_weights(save_spt_weights(tiny_spt, tmp_path / "spt.safetensors"))
    del tensors["draft_decoder.relation_scales.1"]
    tensors["refine_decoder.bogus.lora_A"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="missing draft_decoder.relation_scales.1.*"
                                              "unexpected refine_decoder.bogus"):
        apply_spt_weights(SptSam(tiny_spt.config), tensors, info)


def test_misshapen_spt_tensor_is_named(tmp_path, tiny_spt):
    tensors, info = read_spt_weights(save_spt_weights(tiny_spt, tmp_path / "spt.safetensors"))
    tensors["draft_decoder.relation_scales.0"] = torch.zeros(7)
    with pytest.raises(CheckpointError, match=r"relation_scales.0 \(7,\)"):
        apply_spt_weights(SptSam(tiny_spt.config), tensors, info)


def test_foreign_safetensors_are_not_spt_weights(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not samspt weights"):
        read_spt_weights(path)


def test_failed_save_leaves_no_file(tmp_path, tiny_spt, monkeypatch):
    import samspt.training.checkpoints as ckpt

    target = tmp_path / "spt.safetensors"
    save_spt_weights(tiny_spt, target)
    before = target.read_bytes()

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_spt_weights(randomize_spt_(tiny_spt), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["spt.safetensors"]


def test_pickle_module_is_not_used_for_spt_weights(tmp_path, tiny_spt):
    path = save_spt_weights(tiny_spt, tmp_path / "spt.safetensors")
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(path.read_bytes())
