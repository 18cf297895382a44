"""Convert the SPT paper authors' checkpoint (spt_vit_b.pth, ...) to samspt SPT weights.

    python training/convert_spt.py spt_vit_b.pth --out spt_vit_b.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from samspt.runtime.cli import add_verbose_flag, error_exit
from samspt.runtime.errors import SamsptError
from samspt.runtime.files import sha256_file
from samspt.runtime.logs import configure_cli_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samspt-convert-spt",
        description="Convert a released SPT checkpoint of the paper authors (THU-MIG/SAM-SPT, "
                    "loralib layout) into samspt's SPT weights (.safetensors with metadata). "
                    "The file is read with torch.load(weights_only=True): nothing is unpickled.")
    parser.add_argument("checkpoint", type=Path, help="the authors' spt_vit_{b,l,h}.pth")
    parser.add_argument("--out", type=Path, default=None,
                        help="output .safetensors (default: beside the input, same stem)")
    parser.add_argument("--model-type", default=None,
                        help="vit_b, vit_l or vit_h (default: inferred from the tensor shapes)")
    add_verbose_flag(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging(args.verbose)
    from samspt.training.checkpoints import read_state_dict, save_spt_weights
    from samspt.training.modeling.config import get_config
    from samspt.training.spt_import import authors_extra_metadata, convert_authors_state_dict

    out = args.out or args.checkpoint.with_suffix(".safetensors")
    try:
        config = get_config(args.model_type) if args.model_type else None
        state = read_state_dict(args.checkpoint)
        tensors, model = convert_authors_state_dict(state, config)
        model.load_state_dict(tensors, strict=False)
        extra = authors_extra_metadata(args.checkpoint.name, sha256_file(args.checkpoint))
        save_spt_weights(model, out, mode="spt", extra=extra)
    except SamsptError as exc:
        return error_exit(exc)
    print(f"wrote {out} ({model.config.name}, LoRA rank {model.lora.rank}, "
          f"{sum(t.numel() for t in tensors.values()):,} trained values)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
