"""``trtexec`` command lines that build what :func:`samspt.export.trt_build.build_engines` builds,
for machines without TensorRT's Python builder (pure Python). The engines they write are checked
and recorded afterwards by :func:`samspt.export.trt_build.adopt_engines`.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import List, Optional, Sequence, Union

from samspt.export.trt_options import BuildOptions
from samspt.runtime import tensors
from samspt.runtime.engines import BUILD_COMMAND, TIMING_CACHE, build_command, engine_file_name
from samspt.runtime.manifest import GRAPH_KINDS, Manifest


def _dims(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def trtexec_commands(model_dir: Union[str, Path], engine_dir: Union[str, Path],
                     options: BuildOptions, manifest: Optional[Manifest] = None,
                     trtexec: str = "trtexec") -> List[List[str]]:
    """The ``trtexec`` argument lists that build what :func:`.trt_build.build_engines` builds
    (encoder, then decoder), into ``engine_dir`` with its timing cache. No verification, no
    build.json: run :func:`.trt_build.adopt_engines` (``samspt-build MODEL_DIR --adopt``)
    afterwards."""
    options.validate()
    model_dir, engine_dir = Path(model_dir), Path(engine_dir)
    commands = []
    for kind in GRAPH_KINDS:
        onnx_name = (manifest.graph(kind, options.precision)["file"] if manifest
                     else f"{kind}.{options.precision}.onnx")
        cmd = [trtexec, f"--onnx={model_dir / onnx_name}", "--stronglyTyped"]
        if kind == "encoder":
            size = manifest.input.image_size if manifest else None
            if size:  # the graph takes V views: as many per call as the views profile
                cmd += [f"{flag}={tensors.IMAGE}:{_dims(shape)}" for flag, shape in
                        zip(("--minShapes", "--optShapes", "--maxShapes"),
                            options.profiles.image_shapes(size))]
        if kind == "decoder":
            shapes = options.profiles.shapes()
            for index, flag in enumerate(("--minShapes", "--optShapes", "--maxShapes")):
                cmd.append(f"{flag}=" + ",".join(f"{name}:{_dims(s[index])}"
                                                 for name, s in shapes.items()))
        cmd += [f"--memPoolSize=workspace:{options.workspace_mb}M",
                f"--timingCacheFile={engine_dir / TIMING_CACHE}",
                f"--saveEngine={engine_dir / engine_file_name(kind, options.precision)}",
                "--skipInference"]
        if options.device:
            cmd.append(f"--device={options.device}")
        commands.append(cmd)
    return commands


# trtexec is on PATH in NVIDIA's containers; JetPack installs it in /usr/src/tensorrt/bin.
JETPACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
TRTEXEC_LINE = (f'TRTEXEC="${{TRTEXEC:-$(command -v trtexec || echo {JETPACK_TRTEXEC})}}"'
                "  # set TRTEXEC=/path/to/trtexec to choose another")


def format_trtexec(model_dir: Union[str, Path], engine_dir: Union[str, Path],
                   options: BuildOptions, manifest: Optional[Manifest] = None,
                   gpu_name: str = "", trt_version: str = "") -> str:
    """A shell script: make the engine folder, the trtexec lines, then the adopt command."""
    model_dir = Path(model_dir)
    same = build_command(model_dir, options.precision, *options.profiles)
    lines = [f"# {options.precision} TensorRT engines of {model_dir} for {gpu_name or 'this GPU'}"
             f" with TensorRT {trt_version or '?'}: what `{same}` builds",
             TRTEXEC_LINE,
             shlex.join(["mkdir", "-p", str(engine_dir)])]
    lines += ['"$TRTEXEC" ' + shlex.join(cmd[1:])
              for cmd in trtexec_commands(model_dir, engine_dir, options, manifest)]
    adopt = [BUILD_COMMAND, str(model_dir), "--precision", options.precision, "--adopt"]
    if options.device:
        adopt += ["--device", str(options.device)]
    lines += ["# then check them against ONNX Runtime and record them (writes build.json; "
              "needs the tensorrt and pycuda Python modules):", shlex.join(adopt)]
    return "\n".join(lines) + "\n"
