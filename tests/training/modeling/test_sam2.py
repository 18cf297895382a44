"""SAM 2.1 (``sam2.1_hiera_*``): its published checkpoint layout (``{"model": ...}``, the video
memory's tensors set aside by name) loads strictly into SPT, an untrained SPT model computes
what SAM 2's image predictor computes, LoRA sits on q and v of Hiera's fused projections, the
named sizes are the sam2 package's own, and the family exports to a verified folder the
Inspector runs."""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from samspt.runtime.errors import CheckpointError, ConfigError, ModelTypeMismatchError
from samspt.training.checkpoints import build_model, infer_model_type, load_sam_weights
from samspt.training.modeling.config import MODEL_CONFIGS, LoraConfig, get_config
from samspt.training.modeling.lora import LoRAQKV
from samspt.training.modeling.model import SptSam

from ...conftest import randomize_spt_
from .exported_family import assert_full_size_folder_works

# sam2's own configuration at samspt's sam2_hiera_tiny sizes (64 px input).
TINY_OVERRIDES = [
    "++model.image_size=64",
    "++model.image_encoder.trunk.embed_dim=8",
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.image_encoder.trunk.window_spec=[4,2,2,1]",
    "++model.image_encoder.trunk.window_pos_embed_bkg_spatial_size=[4,4]",
    "++model.image_encoder.neck.d_model=32",
    "++model.image_encoder.neck.backbone_channel_list=[64,32,16,8]",
]
SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


def official_sam2(overrides=(), seed: int = 0):
    """SAM2Base built by sam2's own builder, randomly initialised; the tensors it initialises to
    zero (position embeddings, no_mem_embed) given random values so they are tested too."""
    from sam2.build_sam import build_sam2

    torch.manual_seed(seed)
    model = build_sam2(SAM2_CONFIG, None, device="cpu", mode="eval",
                       hydra_overrides_extra=list(overrides), apply_postprocessing=False)
    with torch.no_grad():
        for name in ("image_encoder.trunk.pos_embed", "image_encoder.trunk.pos_embed_window",
                     "no_mem_embed"):
            model.get_parameter(name).normal_(0.0, 0.5)
    return model


@pytest.fixture(scope="module")
def sam2_checkpoint(tmp_path_factory):
    """``sam2.1_hiera_*.pt``'s layout at the tiny sizes: ``{"model": state_dict}``."""
    model = official_sam2(TINY_OVERRIDES)
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": model.state_dict()}, path)
    return path, model


def test_the_published_layout_loads_strictly_and_computes_what_sam2_computes(sam2_checkpoint):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from samspt.runtime.preprocess import PIXEL_MEAN, PIXEL_STD

    path, official = sam2_checkpoint
    model = build_model(None, path)                 # the type read from the tensors
    assert model.config.name == "sam2_hiera_tiny"
    image = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    predictor = SAM2ImagePredictor(official)
    predictor._bb_feat_sizes = [(16, 16), (8, 8), (4, 4)]   # its table is for 1024 px
    predictor.set_image(image)
    box = np.array([10.0, 12.0, 40.0, 50.0], dtype=np.float32)
    _, _, theirs = predictor.predict(box=box, multimask_output=False, return_logits=True)
    pixels = (torch.tensor(image, dtype=torch.float32) - torch.tensor(PIXEL_MEAN)) \
        / torch.tensor(PIXEL_STD)
    with torch.no_grad():
        embedding = model.encode(pixels.permute(2, 0, 1)[None])
        # SAM 2's predictor sends a box as two corner points plus one padding point
        ours = model.decode(embedding, torch.tensor([[[10.0, 12.0], [40.0, 50.0], [0.0, 0.0]]]),
                            torch.tensor([[2, 3, -1]]))
    features = predictor._features
    dim = model.config.prompt_embed_dim
    torch.testing.assert_close(embedding[:, :dim], features["image_embed"], atol=1e-5,
                               rtol=1e-5)
    torch.testing.assert_close(ours.draft_logits[0], torch.tensor(theirs), atol=1e-4, rtol=1e-4)
    assert float(torch.tensor(theirs).abs().max()) > 0.01      # not a trivially empty answer


def test_checkpoints_of_another_type_or_with_foreign_tensors_are_refused(sam2_checkpoint,
                                                                         tmp_path):
    path, official = sam2_checkpoint
    with pytest.raises(ModelTypeMismatchError, match="sam2_hiera_tiny checkpoint, but the "
                                                     "model is tiny"):
        load_sam_weights(SptSam(get_config("tiny")), path)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_sam_weights(SptSam(get_config("sam2_hiera_tiny")), cut)
    state = dict(official.state_dict())
    state["memory_bank.extra"] = torch.zeros(3)          # not SAM 2's memory: named
    with pytest.raises(CheckpointError, match="unexpected 1 keys: memory_bank.extra"):
        load_sam_weights(SptSam(get_config("sam2_hiera_tiny")), state)
    del state["memory_bank.extra"], state["sam_mask_decoder.obj_score_token.weight"]
    with pytest.raises(CheckpointError, match="missing 2 keys: draft_decoder.obj_score_token"):
        load_sam_weights(SptSam(get_config("sam2_hiera_tiny")), state)


@pytest.mark.parametrize("name", ["sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+",
                                  "sam2.1_hiera_l"])
def test_the_named_sizes_are_the_sam2_packages_own(name):
    """Each model type's trunk and heads as sam2's configs/sam2.1/<name>.yaml builds them, and
    a state dict of that architecture is recognised as that type."""
    import sam2
    import yaml

    spec = yaml.safe_load((Path(sam2.__file__).parent / "configs" / "sam2.1" /
                           f"{name}.yaml").read_text())["model"]
    trunk = spec["image_encoder"]["trunk"]
    config = MODEL_CONFIGS[name]
    assert config.encoder_embed_dim == trunk["embed_dim"]
    assert config.encoder_num_heads == trunk["num_heads"]
    assert config.encoder_stage_depths == tuple(trunk.get("stages", (2, 3, 16, 3)))
    assert config.encoder_global_attn_indexes == tuple(trunk.get("global_att_blocks",
                                                                 (12, 16, 20)))
    assert config.encoder_stage_windows == tuple(trunk.get("window_spec", (8, 4, 14, 7)))
    assert config.encoder_pos_embed_side == trunk.get("window_pos_embed_bkg_spatial_size",
                                                      [14, 14])[0]
    assert config.prompt_embed_dim == spec["image_encoder"]["neck"]["d_model"]
    assert config.image_size == spec["image_size"]
    assert config.decoder_object_score == spec["pred_obj_scores"] == spec["pred_obj_scores_mlp"]
    assert config.decoder_score_sigmoid == spec["iou_prediction_use_sigmoid"]
    shapes = {k: v for k, v in SptSam(config, lora=None).state_dict().items()
              if k.startswith("image_encoder.trunk.")}
    assert infer_model_type(shapes) == name


def test_lora_sits_on_q_and_v_of_every_hiera_attention_and_leaves_k_alone():
    torch.manual_seed(0)
    config = get_config("sam2_hiera_tiny")
    model = SptSam(config, LoraConfig(rank=2, alpha=1.0))
    fused = [m for m in model.image_encoder.modules() if isinstance(m, LoRAQKV)]
    assert len(fused) == config.encoder_depth
    layer = fused[1]                       # a pooling block: its width doubles (in != out / 3)
    assert layer.out_features == 6 * layer.in_features
    torch.nn.init.normal_(layer.lora_B_q)
    torch.nn.init.normal_(layer.lora_B_v)
    x = torch.randn(5, layer.in_features)
    with torch.no_grad():
        moved = layer(x) - torch.nn.functional.linear(x, layer.weight, layer.bias)
        merged = x @ (layer.weight + layer.delta_weight()).T + layer.bias
    q, k, v = moved.chunk(3, dim=-1)        # Hiera: rows [q; k; v], as SAM's ViT
    assert k.abs().max() == 0 and q.abs().min() > 0 and v.abs().min() > 0
    torch.testing.assert_close(merged, layer(x).detach(), atol=1e-5, rtol=1e-5)


def test_hiera_settings_are_checked():
    config = get_config("sam2_hiera_tiny")
    with pytest.raises(ConfigError, match="four stages"):
        dataclasses.replace(config, encoder_stage_depths=(1, 2, 2))
    with pytest.raises(ConfigError, match="sum of its stage depths"):
        dataclasses.replace(config, encoder_depth=7)
    with pytest.raises(ConfigError, match="pooling blocks"):
        dataclasses.replace(config, encoder_global_attn_indexes=(2,))


def test_the_object_score_answers_no_object_with_sam2s_logit():
    """SAM 2's object-score head: a negative score sets the mask to its "no object" logit in
    eval mode (training keeps the mask's gradient)."""
    from samspt.training.modeling.decoder import NO_OBJECT_LOGIT

    torch.manual_seed(0)
    model = SptSam(get_config("sam2_hiera_tiny")).eval()
    with torch.no_grad():
        model.draft_decoder.pred_obj_score_head.layers[-1].bias.fill_(-100.0)
        model.refine_decoder.pred_obj_score_head.layers[-1].bias.fill_(100.0)
        embedding = model.encode(torch.randn(1, 3, 64, 64))
        out = model.decode(embedding, torch.tensor([[[4.0, 4.0], [40.0, 40.0]]]),
                           torch.tensor([[2, 3]]))
    assert torch.all(out.draft_logits == NO_OBJECT_LOGIT)
    assert not torch.all(out.logits == NO_OBJECT_LOGIT)        # the refine decoder's head
    model.train()
    out = model.decode(embedding, torch.tensor([[[4.0, 4.0], [40.0, 40.0]]]),
                       torch.tensor([[2, 3]]))
    assert not torch.all(out.draft_logits == NO_OBJECT_LOGIT)


def test_the_family_exports_a_verified_folder_the_inspector_runs(tmp_path):
    from samspt.export.onnx_export import export_model
    from samspt.export.trt_support import check_files
    from samspt.runtime import Inspector
    from samspt.runtime.manifest import tensorrt_graph_files
    from samspt.runtime.samples import bundled_verify_images
    from samspt.training.predict import predict

    torch.manual_seed(0)
    model = randomize_spt_(SptSam(get_config("sam2_hiera_tiny")).train(), scale=0.2)
    with torch.no_grad():
        model.image_encoder.trunk.pos_embed.normal_(0.0, 0.5)
    model.eval()
    images = bundled_verify_images()[:2]
    result = export_model(model, tmp_path / "m", "m", verify_images=images, precision="all")
    verification = result.manifest.verification
    assert verification["fp32"]["mean_iou"] >= 0.999
    assert verification["fp16"]["mean_iou"] >= 0.99
    gates = verification["gates"]["int8"]
    assert verification["int8"]["mean_iou"] >= gates["mean_iou"]
    # LoRA merged: the encoder graph is the vanilla encoder's (the same op histogram)
    vanilla = tmp_path / "vanilla.onnx"
    plain = SptSam(get_config("sam2_hiera_tiny"), lora=None).eval()
    torch.onnx.export(plain.image_encoder, torch.randn(1, 3, 64, 64), str(vanilla), dynamo=False,
                      input_names=["image"], output_names=["image_embeddings"],
                      dynamic_axes={"image": {0: "V"}}, opset_version=17)

    def histogram(path):      # the tracer's Identity nodes (aliases) compute nothing
        return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node
                                   if n.op_type != "Identity")

    encoder_ops = histogram(tmp_path / "m" / "encoder.fp32.onnx")
    assert encoder_ops == histogram(vanilla)
    assert "If" not in encoder_ops           # the position embedding's resize: fixed matrices
    # every node of the graphs TensorRT is given passes the ONNX-TensorRT parser's lists
    report = check_files([tmp_path / "m" / name
                          for name in tensorrt_graph_files(result.manifest.graphs)])
    assert report and not any(report.values()), report
    _, image, boxes = images[0]
    with Inspector(tmp_path / "m") as inspector:
        answer = inspector.inspect(image, boxes=boxes[:1])
        pointed = inspector.inspect(image, points=np.array([[[100.0, 120.0]]]),
                                    point_labels=np.array([[1]]))
        scanned = inspector.inspect(image)                  # prompt-free
    expected = predict(model, image, boxes=boxes[:1])
    assert pointed.masks.shape == scanned.masks.shape == (1, *image.shape[:2])
    assert (answer.masks[0] == expected.masks[0]).mean() > 0.995


@pytest.mark.slow
def test_samspt_export_writes_a_verified_full_size_sam2_folder(tmp_path):
    """`samspt-export --checkpoint sam2.1_hiera_tiny.pt --model-type sam2.1_hiera_t --out DIR`:
    FP32 and FP16 graphs at 1024 px pass their parity gates and the operator check; the
    Inspector answers a box."""
    from samspt.export.to_onnx import main

    checkpoint = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": official_sam2().state_dict()}, checkpoint)
    out = tmp_path / "h_t"
    assert main(["--checkpoint", str(checkpoint), "--model-type", "sam2.1_hiera_t",
                 "--out", str(out)]) == 0
    assert_full_size_folder_works(out, "sam2.1_hiera_t")


def test_the_one_command_trains_spt_on_a_sam2_checkpoint(sam2_checkpoint, tmp_path):
    """`samspt-train --init sam2.1_hiera_*.pt` plans SPT on it, and a training step moves only
    SPT's tensors (LoRA on Hiera's and the decoders' q and v, relation scales)."""
    from ..spt_init import assert_one_command_trains_spt

    path, _ = sam2_checkpoint
    assert_one_command_trains_spt(path, "sam2_hiera_tiny", "image_encoder.trunk.blocks.",
                                  tmp_path)
