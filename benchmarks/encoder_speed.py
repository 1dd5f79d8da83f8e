"""Encoder throughput: our single-pass feature extraction vs the reference code's two passes.

The reference code runs the vision tower once for the patch tokens and a second, full time
(``get_image_features``) for CLS; ``CLIPEncoder.forward`` gets both from one pass. This script
times both on the same random-weight encoder and inputs, and compares the encoder's achieved
GFLOP/s with a large matmul's on the same device, in the same run, as a practical roofline.

    python benchmarks/encoder_speed.py                 # ViT-B/16 @ 224, CPU
    python benchmarks/encoder_speed.py --vit-l --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from clipdepth.config import CLIPEncoderConfig
from clipdepth.encoders import CLIPEncoder

# The text tower is never run here; a tiny one keeps model construction fast.
TINY_TEXT = dict(text_hidden_size=64, text_num_layers=1, text_num_heads=2)
VIT_B16_224 = dict(image_size=224, patch_size=16, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072, projection_dim=512)
VIT_L14_336 = dict(image_size=336, patch_size=14, hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096, projection_dim=768)


def build_encoder(vit_l: bool) -> CLIPEncoder:
    arch = VIT_L14_336 if vit_l else VIT_B16_224
    return CLIPEncoder.from_config(CLIPEncoderConfig(random_init=True, **arch, **TINY_TEXT))


def two_pass(encoder: CLIPEncoder, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference code's extraction: one tower pass for the patch tokens, a second for CLS."""
    model = encoder.model
    hidden = model.vision_model(pixel_values=pixel_values).last_hidden_state
    tokens = model.visual_projection(model.vision_model.post_layernorm(hidden[:, 1:]))
    cls = F.normalize(model.get_image_features(pixel_values).pooler_output, dim=-1)
    return tokens, cls


def seconds(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vit-l", action="store_true", help="ViT-L/14 @ 336 (projection 768) instead of ViT-B/16 @ 224")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement; medians are reported")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--matmul-size",
        type=int,
        default=None,
        help="side of the square reference matmul (default 2048 on CPU, 8192 on CUDA, where 2048 does not fill the GPU)",
    )
    args = parser.parse_args()

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    # On CUDA the encoder runs in bf16 autocast (as inference would); the reference matmul runs
    # under the same autocast so both sides of roofline_fraction use the same arithmetic.
    precision = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext
    n = args.matmul_size or (8192 if cuda else 2048)

    torch.manual_seed(0)
    encoder = build_encoder(args.vit_l).to(device)
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    matmul_flops = 2 * n**3
    print(
        f"encoder: ViT {encoder.model.config.vision_config.hidden_size}-wide, patch {encoder.patch_size}, "
        f"{encoder.image_size} px, projection {encoder.embed_dim}; device {device}"
        f"{' (bf16 autocast)' if cuda else f', {torch.get_num_threads()} threads, fp32'}"
    )

    results = {}
    with torch.inference_mode(), precision():
        for batch in args.batches:
            pixel_values = torch.randn(batch, 3, encoder.image_size, encoder.image_size, device=device)
            with FlopCounterMode(display=False) as counter:
                encoder(pixel_values)
            encoder_flops = counter.get_total_flops()
            runs = {"single": lambda: encoder(pixel_values), "two_pass": lambda: two_pass(encoder, pixel_values), "matmul": lambda: a @ b}
            for fn in runs.values():
                for _ in range(args.warmup):
                    fn()
            # Interleaved, so that load from other processes hits all three alike.
            times: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(args.repeats):
                for name, fn in runs.items():
                    times[name].append(seconds(fn, sync))
            med = {name: statistics.median(t) for name, t in times.items()}
            encoder_gflops = encoder_flops / med["single"] / 1e9
            matmul_gflops = matmul_flops / med["matmul"] / 1e9
            results[batch] = (med["two_pass"] / med["single"], encoder_gflops / matmul_gflops)
            print(
                f"batch {batch}: single-pass {batch / med['single']:.2f} img/s, two-pass {batch / med['two_pass']:.2f} img/s "
                f"(x{results[batch][0]:.2f}); encoder {encoder_flops / batch / 1e9:.1f} GFLOP/img, "
                f"{encoder_gflops:.1f} GFLOP/s vs {n}^3 matmul {matmul_gflops:.1f} GFLOP/s "
                f"-> roofline_fraction {results[batch][1]:.3f} (medians of {args.repeats})"
            )

    last = max(results)
    first = min(results)
    print(f"roofline_fraction_batch{first}={results[first][1]:.3f}")
    print(f"single_vs_two_pass={results[last][0]:.3f} roofline_fraction={results[last][1]:.3f}")


if __name__ == "__main__":
    main()
