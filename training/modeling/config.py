"""Model configurations: SAM's three sizes and small named ones for tests and the example model.

A configuration is plain data (JSON-serialisable) so it can travel as safetensors metadata and in
export manifests.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from samspt.runtime.errors import ConfigError
from samspt.runtime.preprocess import PIXEL_MEAN, PIXEL_STD
from samspt.runtime.views import ViewSettings


ENCODER_FAMILIES = ("vit", "conv", "tinyvit", "hiera")
# MobileSAM's TinyViT (training/modeling/tinyvit_encoder.py) reaches stride 16 only with a last
# stage of one of these widths: its patch merging keeps stride 1 into them, stride 2 elsewhere.
TINYVIT_LAST_STAGE_DIMS = (320, 448, 576)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a SAM-style model (image encoder, prompt encoder, mask decoders)."""

    name: str
    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: Tuple[int, ...]
    encoder_window_size: int = 14
    image_size: int = 1024
    patch_size: int = 16
    prompt_embed_dim: int = 256
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16
    # Std of the random Fourier positional encoding's frequencies, in cycles per image side
    # (SAM: 1.0). A model trained from scratch on small defects needs finer positions: the
    # encoding varies over about 1 / (2 pi scale) of the image.
    pe_scale: float = 1.0
    # Box clip: with a margin m, logits outside each box prompt's box grown by m of its size per
    # side are set to a fixed negative value, in the model and so in every exported graph (None:
    # SAM's behaviour, no clip). A box prompt says where the defect is; the clip keeps a mask
    # from spilling across the part, and lets a model trained from scratch start from "the box"
    # and learn what inside it is defect instead of first learning to follow the box.
    box_clip_margin: Optional[float] = None
    pixel_mean: Tuple[float, float, float] = PIXEL_MEAN
    pixel_std: Tuple[float, float, float] = PIXEL_STD
    # Image encoder family: "vit" (SAM's ImageEncoderViT, the encoder_* fields above) or "conv"
    # (a timm CNN trunk named by encoder_arch, cut at stride patch_size; see conv_encoder.py).
    encoder: str = "vit"
    encoder_arch: Optional[str] = None
    # Staged encoders ("tinyvit": MobileSAM's TinyViT): per stage its width, depth, attention
    # heads and window side (the first stage is convolutional: its heads and window unused).
    encoder_stage_dims: Tuple[int, ...] = ()
    encoder_stage_depths: Tuple[int, ...] = ()
    encoder_stage_heads: Tuple[int, ...] = ()
    encoder_stage_windows: Tuple[int, ...] = ()
    # SAM 2.1's Hiera ("hiera", training/modeling/hiera_encoder.py): encoder_embed_dim and
    # encoder_num_heads are its first stage's (doubled at each stage), encoder_stage_depths its
    # blocks per stage (encoder_depth their sum), encoder_stage_windows its window sides,
    # encoder_global_attn_indexes its global-attention blocks, and this the side of its
    # background position embedding.
    encoder_pos_embed_side: int = 0
    # SAM 2's mask decoder heads: an object-score token and MLP whose negative score sets the
    # mask to SAM 2's "no object" logit (in eval mode, as SAM 2 does), and the IoU prediction
    # through a sigmoid.
    decoder_object_score: bool = False
    decoder_score_sigmoid: bool = False
    # High-resolution features (SAM 2's mask decoder): the conv trunk's features at strides
    # patch_size/2 and patch_size/4 are added to the decoders' two upscaling stages, so mask
    # edges come from pixels rather than from 1/patch_size tokens. They travel inside the one
    # image_embeddings tensor, packed after the C embedding channels (see embedding_channels).
    high_res_features: bool = False
    # A pixel decoder (conv family, with high_res_features): the high-res features come from a
    # top-down path (FPN: each stride's trunk features plus the upsampled coarser result, then a
    # 3x3 conv block) instead of 1x1 projections of the trunk alone, so the stride patch/4 and
    # patch/2 features that mask edges are read from carry what the deep layers saw, as a
    # U-Net's skip connections do. Computed once per view, in the encoder graph.
    pixel_decoder: bool = False
    # Stochastic depth in the conv trunk (timm's drop_path_rate: each residual block skipped
    # with up to this probability in training): a regulariser for small datasets. Training
    # only: the exported graph and the answers of a trained model do not depend on it.
    encoder_drop_path: float = 0.0
    # A residual 3x3 conv block after each of the decoders' upscaling stages (zero-initialised,
    # so it starts as the identity): mask pixels see their neighbours at full mask resolution,
    # per prompt, instead of only a 2x2 transposed convolution.
    upscale_convs: bool = False
    # The box as a dense prompt too: a learned vector added to the draft decoder's dense
    # embedding at every token whose cell centre lies inside the box prompt (zero-initialised:
    # off until trained), so every token knows whether it is in the box, as a U-Net given the
    # box as an input channel does. Prompts without a box get none.
    box_dense_prompt: bool = False
    # The box at mask resolution too (with high_res_features): a learned vector per upscaling
    # stage and pass added to the high-res features at every pixel inside the box prompt
    # (zero-initialised), so the stride-2 mask knows the box's edges to the pixel, as a U-Net
    # given the box as an input channel does, where the dense prompt marks whole tokens.
    box_high_res: bool = False
    # A scan head: a small per-token classifier on the image embedding (1x1 conv, ReLU, 1x1
    # conv) saying whether each token's cell holds a defect, trained beside the box task. The
    # prompt-free scan reads it to find candidate regions (then answers them as box prompts) and
    # to score the image; the runtime computes it in numpy from the exported scan_head.npz.
    scan_head: bool = False
    # Its hidden width; 0: a quarter of the embedding's channels (the head trained with the
    # model). The finish stage's refit (training/scan_refit.py) sets the width it fitted.
    scan_head_hidden: int = 0
    # Views (samspt.runtime.views): a model trained on zoomed views records how they are chosen;
    # view_context None is a whole-image model (SAM's protocol, the SAM sizes).
    view_context: Optional[float] = None
    # The other view settings default to the runtime's (one home: ViewSettings).
    view_min_side: int = ViewSettings.min_side
    scan_side: int = ViewSettings.scan_side
    scan_overlap: float = ViewSettings.scan_overlap
    view_max_side: int = ViewSettings.max_side
    scan_min_score: Optional[float] = ViewSettings.scan_min_score
    prompt_min_score: Optional[float] = ViewSettings.prompt_min_score
    view_flips: int = ViewSettings.flips      # test-time flips (the finish stage chooses them)

    def __post_init__(self) -> None:
        if self.mask_in_chans < 8 or self.mask_in_chans % 4:
            # SAM's mask-prompt path layer-normalises mask_in_chans // 4 channels: with one
            # channel the mask prompt would be normalised away and the refine pass would be blind.
            raise ConfigError(f"{self.name}: mask_in_chans must be a multiple of 4 and >= 8, got "
                              f"{self.mask_in_chans}")
        if self.image_size % self.patch_size:
            raise ConfigError(f"{self.name}: image_size {self.image_size} is not a multiple of "
                              f"patch_size {self.patch_size}")
        if self.encoder not in ENCODER_FAMILIES:
            raise ConfigError(f"{self.name}: encoder must be one of {ENCODER_FAMILIES}, got "
                              f"{self.encoder!r}")
        if self.encoder == "conv" and not self.encoder_arch:
            raise ConfigError(f"{self.name}: the conv encoder needs encoder_arch (a timm "
                              "architecture name, e.g. 'resnet18')")
        if self.encoder == "tinyvit":
            self._check_stages()
        if self.encoder == "hiera":
            self._check_hiera()
        if self.high_res_features and (self.encoder not in ("conv", "hiera")
                                       or self.patch_size % 4 or self.prompt_embed_dim % 8):
            raise ConfigError(f"{self.name}: high_res_features needs the conv or hiera encoder, "
                              "a patch_size divisible by 4 and a prompt_embed_dim divisible by 8")
        if self.box_high_res and not self.high_res_features:
            raise ConfigError(f"{self.name}: box_high_res marks the box on the high-res "
                              "features: it needs high_res_features (and the conv encoder)")
        if self.pixel_decoder and not self.high_res_features:
            raise ConfigError(f"{self.name}: pixel_decoder builds the high-res features: it "
                              "needs high_res_features (and the conv encoder)")
        if self.encoder == "vit" and self.encoder_embed_dim % self.encoder_num_heads:
            raise ConfigError(f"{self.name}: encoder_num_heads {self.encoder_num_heads} must "
                              f"divide encoder_embed_dim {self.encoder_embed_dim}")
        if not 0.0 <= self.encoder_drop_path < 1.0 or (self.encoder_drop_path
                                                       and self.encoder != "conv"):
            raise ConfigError(f"{self.name}: encoder_drop_path is the conv trunk's stochastic "
                              f"depth, in [0, 1) (0: off), got {self.encoder_drop_path!r} "
                              f"for the {self.encoder} encoder")
        if type(self.scan_head_hidden) is not int or self.scan_head_hidden < 0:
            raise ConfigError(f"{self.name}: scan_head_hidden must be a whole number >= 0 (0: a "
                              f"quarter of the embedding's channels), got "
                              f"{self.scan_head_hidden!r}")
        if self.view_context is not None:
            self.view_settings  # raises ConfigError on bad values
        if self.box_clip_margin is not None and not 0 <= self.box_clip_margin <= 10:
            raise ConfigError(f"{self.name}: box_clip_margin must be None or in [0, 10], got "
                              f"{self.box_clip_margin}")
        bad = [i for i in self.encoder_global_attn_indexes if not 0 <= i < self.encoder_depth]
        if bad:
            raise ConfigError(f"{self.name}: global attention indexes {bad} outside 0.."
                              f"{self.encoder_depth - 1}")

    def _check_stages(self) -> None:
        stages = (self.encoder_stage_dims, self.encoder_stage_depths, self.encoder_stage_heads,
                  self.encoder_stage_windows)
        if len(set(map(len, stages))) != 1 or len(self.encoder_stage_dims) != 4:
            raise ConfigError(f"{self.name}: the tinyvit encoder needs four stages: "
                              "encoder_stage_dims, _depths, _heads and _windows of 4 values each")
        if self.encoder_stage_dims[-1] not in TINYVIT_LAST_STAGE_DIMS or self.patch_size != 16:
            raise ConfigError(f"{self.name}: MobileSAM's TinyViT reaches stride 16 (patch_size "
                              f"16) only with a last stage of {TINYVIT_LAST_STAGE_DIMS} channels, "
                              f"got {self.encoder_stage_dims[-1]} and patch_size {self.patch_size}")
        bad = [(d, h) for d, h in zip(self.encoder_stage_dims[1:], self.encoder_stage_heads[1:])
               if h < 1 or d % h]
        if bad:
            raise ConfigError(f"{self.name}: each attention stage's heads must divide its width, "
                              f"got (width, heads) {bad}")

    def _check_hiera(self) -> None:
        stages, windows = self.encoder_stage_depths, self.encoder_stage_windows
        if len(stages) != 4 or len(windows) != 4 or min(stages) < 1:
            raise ConfigError(f"{self.name}: the hiera encoder needs four stages: "
                              "encoder_stage_depths and encoder_stage_windows of 4 values each")
        if sum(stages) != self.encoder_depth or self.patch_size != 16 or \
                not self.high_res_features or self.encoder_pos_embed_side < 1:
            raise ConfigError(f"{self.name}: SAM 2.1's Hiera has encoder_depth = the sum of its "
                              f"stage depths ({sum(stages)}, got {self.encoder_depth}), "
                              "patch_size 16, high_res_features on and an "
                              "encoder_pos_embed_side >= 1")
        pooling = {sum(stages[:i]) for i in (1, 2, 3)}   # each stage's first block pools
        if pooling & set(self.encoder_global_attn_indexes):
            raise ConfigError(f"{self.name}: Hiera's pooling blocks {sorted(pooling)} (the first "
                              "of stages 2-4) cannot take global attention; got "
                              f"{sorted(self.encoder_global_attn_indexes)}")

    @property
    def view_settings(self) -> Optional[ViewSettings]:
        """The views this model was trained on, or None for a whole-image model."""
        if self.view_context is None:
            return None
        return ViewSettings(context=self.view_context, min_side=self.view_min_side,
                            scan_side=self.scan_side, scan_overlap=self.scan_overlap,
                            max_side=self.view_max_side, scan_min_score=self.scan_min_score,
                            prompt_min_score=self.prompt_min_score, flips=self.view_flips)

    @property
    def embedding_size(self) -> int:
        """Side h = w of the image embedding (SAM: 64)."""
        return self.image_size // self.patch_size

    @property
    def embedding_channels(self) -> int:
        """Channels of the ``image_embeddings`` tensor: the C = prompt_embed_dim embedding
        channels, then, with high_res_features, the stride patch/2 features (C/4 channels,
        space-to-depth by 2: C) and the stride patch/4 features (C/8, space-to-depth by 4: 2C)."""
        dim = self.prompt_embed_dim
        return 4 * dim if self.high_res_features else dim

    @property
    def num_tokens(self) -> int:
        """Image-embedding tokens h*w the relation adapter relates (SAM: 4096)."""
        return self.embedding_size ** 2

    def to_dict(self) -> Dict[str, object]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Dict[str, object]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model configuration keys {unknown}; known: {sorted(known)}")
        values = dict(data)
        for key in ("encoder_global_attn_indexes", "pixel_mean", "pixel_std",
                    "encoder_stage_dims", "encoder_stage_depths", "encoder_stage_heads",
                    "encoder_stage_windows"):  # JSON lists back to tuples
            if key in values:
                values[key] = tuple(values[key])  # type: ignore[arg-type]
        try:
            return cls(**values)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ConfigError(f"incomplete model configuration: {exc}") from None


@dataclass(frozen=True)
class LoraConfig:
    """LoRA on q and v projections: ``W + (alpha / rank) * B @ A``."""

    rank: int = 8
    alpha: float = 1.0

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ConfigError(f"LoRA rank must be >= 1, got {self.rank}")
        if not self.alpha > 0:
            raise ConfigError(f"LoRA alpha must be > 0, got {self.alpha}")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


MODEL_CONFIGS: Dict[str, ModelConfig] = {
    # Segment Anything's released sizes.
    "vit_b": ModelConfig("vit_b", 768, 12, 12, (2, 5, 8, 11)),
    "vit_l": ModelConfig("vit_l", 1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": ModelConfig("vit_h", 1280, 32, 16, (7, 15, 23, 31)),
    # The bundled example model: SAM's architecture, small enough for a CPU (32x32 tokens).
    "small": ModelConfig(
        "small", encoder_embed_dim=256, encoder_depth=6, encoder_num_heads=4,
        encoder_global_attn_indexes=(2, 5), encoder_window_size=8, image_size=512,
        prompt_embed_dim=128, decoder_num_heads=4, decoder_mlp_dim=512,
        iou_head_hidden_dim=128, pe_scale=4.0, box_clip_margin=0.0,
    ),
    # The bundled example model: a light conv encoder (timm ResNet-18 trunk to stride 8) and
    # SPT's decoders, on 128 px views (16x16 tokens) with the trunk's stride-4 and stride-2
    # features in the decoders' upscaling (SAM 2); trained from scratch on a CPU.
    "cnn_small": ModelConfig(
        "cnn_small", encoder_embed_dim=0, encoder_depth=0, encoder_num_heads=1,
        encoder_global_attn_indexes=(), image_size=128, patch_size=8, prompt_embed_dim=128,
        decoder_num_heads=4, decoder_mlp_dim=512, iou_head_hidden_dim=128, pe_scale=2.0,
        box_clip_margin=0.0, encoder="conv", encoder_arch="resnet18", view_context=2.0,
        view_min_side=64, scan_side=160, scan_overlap=0.25, high_res_features=True,
    ),
    # The conv family for unit tests (8x8 tokens).
    "cnn_tiny": ModelConfig(
        "cnn_tiny", encoder_embed_dim=0, encoder_depth=0, encoder_num_heads=1,
        encoder_global_attn_indexes=(), image_size=64, patch_size=8, prompt_embed_dim=32,
        decoder_num_heads=2, decoder_mlp_dim=64, iou_head_hidden_dim=32, encoder="conv",
        encoder_arch="resnet10t", box_clip_margin=0.0, view_context=2.0, view_min_side=16,
        scan_side=48, scan_overlap=0.25, high_res_features=True,
    ),
    # MobileSAM (TinyViT-5M encoder, SAM's prompt encoder and mask decoder): mobile_sam.pt.
    "mobile_sam_vit_t": ModelConfig(
        "mobile_sam_vit_t", encoder_embed_dim=320, encoder_depth=12, encoder_num_heads=10,
        encoder_global_attn_indexes=(), encoder="tinyvit",
        encoder_stage_dims=(64, 128, 160, 320), encoder_stage_depths=(2, 2, 6, 2),
        encoder_stage_heads=(2, 4, 5, 10), encoder_stage_windows=(7, 7, 14, 7)),
    # MobileSAM's architecture for unit tests (4x4 tokens at 64 px).
    "mobile_sam_tiny": ModelConfig(
        "mobile_sam_tiny", encoder_embed_dim=320, encoder_depth=4, encoder_num_heads=4,
        encoder_global_attn_indexes=(), image_size=64, prompt_embed_dim=32,
        decoder_num_heads=2, decoder_mlp_dim=64, iou_head_hidden_dim=32, encoder="tinyvit",
        encoder_stage_dims=(8, 16, 24, 320), encoder_stage_depths=(1, 1, 1, 1),
        encoder_stage_heads=(1, 2, 3, 4), encoder_stage_windows=(2, 2, 2, 2)),
    # SAM 2.1's image path (Hiera trunk, FPN neck, SAM 2's decoder heads): sam2.1_hiera_*.pt;
    # each as the sam2 package's configs/sam2.1/<name>.yaml builds it (a test checks).
    **{name: ModelConfig(
        name, encoder_embed_dim=dim, encoder_depth=sum(stages), encoder_num_heads=heads,
        encoder_global_attn_indexes=global_blocks, encoder="hiera", encoder_stage_depths=stages,
        encoder_stage_windows=windows, encoder_pos_embed_side=pos, high_res_features=True,
        decoder_object_score=True, decoder_score_sigmoid=True)
       for name, dim, heads, stages, global_blocks, windows, pos in (
           ("sam2.1_hiera_t", 96, 1, (1, 2, 7, 2), (5, 7, 9), (8, 4, 14, 7), 7),
           ("sam2.1_hiera_s", 96, 1, (1, 2, 11, 2), (7, 10, 13), (8, 4, 14, 7), 7),
           ("sam2.1_hiera_b+", 112, 2, (2, 3, 16, 3), (12, 16, 20), (8, 4, 14, 7), 14),
           ("sam2.1_hiera_l", 144, 2, (2, 6, 36, 4), (23, 33, 43), (8, 4, 16, 8), 7))},
    # SAM 2.1's architecture for unit tests (4x4 tokens at 64 px; the decoder's sizes are the
    # ones SAM2Base fixes for every model: 8 heads, MLP 2048, IoU head 256).
    "sam2_hiera_tiny": ModelConfig(
        "sam2_hiera_tiny", encoder_embed_dim=8, encoder_depth=5, encoder_num_heads=1,
        encoder_global_attn_indexes=(3,), image_size=64, prompt_embed_dim=32,
        encoder="hiera",
        encoder_stage_depths=(1, 1, 2, 1), encoder_stage_windows=(4, 2, 2, 1),
        encoder_pos_embed_side=4, high_res_features=True, decoder_object_score=True,
        decoder_score_sigmoid=True),
    # For unit tests: every part of the real architecture, in milliseconds (8x8 tokens).
    "tiny": ModelConfig(
        "tiny", encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
        encoder_global_attn_indexes=(1,), encoder_window_size=4, image_size=64, patch_size=8,
        prompt_embed_dim=32, decoder_num_heads=2, decoder_mlp_dim=64, iou_head_hidden_dim=32,
    ),
}


def get_config(name: str) -> ModelConfig:
    """The named configuration, or a ConfigError listing the known names."""
    try:
        return MODEL_CONFIGS[name]
    except KeyError:
        raise ConfigError(f"unknown model type {name!r}; choose one of "
                          f"{', '.join(MODEL_CONFIGS)}") from None
