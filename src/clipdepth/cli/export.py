"""`clipdepth export onnx`: the model as ONNX graphs, checked against PyTorch with onnxruntime.

Writes ``model.onnx`` (images in [0, 1] -> depth in metres at the input size, and bin
probabilities), ``head.onnx`` (patch tokens and CLS -> per-patch depth, bin probabilities), each
with its weights in ``<graph>.data``, and ``export.json`` with the opset, the max abs differences
to PyTorch and the files written; all verified before they appear (``models.onnx``).
Needs the ``onnx`` extra (``pip install -e ".[onnx]"`` in the repository).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..io.atomic import refuse_existing
from .args import output_folder, path_arg, positive_int

HELP = "export a checkpoint to another format (onnx)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help=HELP, description="Example: clipdepth export onnx --checkpoint outputs/demo/model --out onnx/")
    formats = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    o = formats.add_parser(
        "onnx",
        help="model.onnx (images -> depth) and head.onnx (features -> depth), checked with onnxruntime",
        description="Example: clipdepth export onnx --checkpoint outputs/demo/model --out onnx/ --opset 18",
    )
    o.add_argument("--checkpoint", required=True, help="a head checkpoint folder (or Hub id)")
    o.add_argument("--out", type=path_arg, default=Path("onnx"), help="output folder (default: ./onnx)")
    o.add_argument("--opset", type=positive_int, default=18, help="ONNX opset version, 18 or newer (default: 18)")
    o.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run there (default: refuse)")
    o.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..models import load_model
    from ..models.onnx import check_opset, require_onnx

    require_onnx()  # fail fast, before loading the model
    check_opset(args.opset)
    output_folder(args.out)
    model = load_model(args.checkpoint)
    refuse_existing([args.out / name for name in model.onnx_files], args.overwrite)
    report = model.export_onnx(args.out, args.opset)
    for key in ("model", "head"):
        print(
            f"{report[key]['path']}: max abs difference to PyTorch {report[key]['max_abs_diff']:.3g} "
            f"(onnxruntime, batch {report['check_batch']})"
        )
    print(f"wrote {', '.join(report['files'])} to {args.out} (opset {report['opset']})")
    return 0
