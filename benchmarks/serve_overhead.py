"""What ``clipdepth serve`` costs per request over the model's own ``infer``, on the same images.

In process, without Gradio or HTTP: ``DepthService.predict`` (what the page's button calls) against
``model.infer(path)`` (read the image, run the model, depth to numpy), interleaved round by round,
after a warm-up, on a random-weight PureCLIP-Depth (by default the demo recipe's, as ``clipdepth
demo`` trains it) and 480 x 640 JPEG photos of rendered rooms.

A request produces what the page shows at once, and ``predict`` returns only once it is on disk
(nothing is left to a thread the timing does not wait for): it reads the upload and its EXIF, runs
the model under its lock, writes the depth's colour PNG with its metre scale (stored, not deflated)
and drops the oldest result beyond ``keep`` (its folder deleted). The rest is written only when the
user presses its button (``DepthService.result_file``, from the result kept in memory): the 3-D
view's GLB, the uncertainty's colour PNG (PureCLIP-Depth gives one) and the downloads, the 16-bit
depth PNG and the PLY. Their cost is timed apart, after the rounds, once per result of the last one,
and printed on a line of its own (``view_ms``, ``uncertainty_ms``, ``depth_png_ms``, ``ply_ms``), not
counted in a request. (Written between rounds, for every result, their ~50 MB of files made the
next round's requests 2-3 ms slower each on this machine: a burst no page gets.)

Serve is timed two ways:

- ``serve_concurrent``: requests from ``clipdepth.serve.service.concurrent_requests()`` clients at once, as the
  page takes them: 2 where the model leaves cores free (a GPU, or ``--threads`` below the CPUs), so
  that one request's colour PNG is written while the next one's model runs, else 1; per request =
  wall time / requests. This is ``serve_over_infer``.
- ``serve_sequential``: one request after another (one user's latency). With one client at a time this
  is what the page does too, and ``serve_concurrent`` is this same measurement (not a second run of it).

Besides wall time, the process's CPU time per request (every thread's; ``serve_cpu_over_infer``, of
the sequential requests): the work a request causes, which other programs on a shared machine
change less than they change wall times.

    python benchmarks/serve_overhead.py                  # the demo's random CLIP, ~30 s on 2 cores
    python benchmarks/serve_overhead.py --encoder tiny    # the tests' 56 px encoder: the files' cost alone
    python benchmarks/serve_overhead.py --encoder vit-b16 # CLIP ViT-B/16 @ 224 shapes, random weights
    python benchmarks/serve_overhead.py --threads 1       # one torch thread (a machine shared with others)

Last line: ``serve_over_infer=<ratio> infer_ms=... serve_ms=... serve_sequential_ms=...``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from PIL import Image

from clipdepth.config import load_config
from clipdepth.data.synthetic import render_scene
from clipdepth.models import build_model
from clipdepth.serve import DepthService, find_checkpoints
from clipdepth.serve.service import concurrent_requests
from clipdepth.serve.service import ON_DEMAND

ENCODERS = {
    "demo": {},  # the demo recipe's own small random-weight CLIP (224 px input, 4 layers of width 192)
    # the tests' tiny encoder (tests/conftest.py TINY_ENCODER): the model costs next to nothing
    "tiny": dict(image_size=56, patch_size=14, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, projection_dim=32),
    "vit-b16": dict(
        image_size=224, patch_size=16, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072, projection_dim=512
    ),
}
TINY_TEXT = dict(text_hidden_size=32, text_num_layers=1, text_num_heads=2)


def photos(folder: Path, count: int, height: int, width: int) -> list[Path]:
    paths = []
    for seed in range(count):
        path = folder / f"room{seed}.jpg"
        Image.fromarray(render_scene("indoor", seed, height, width).image).save(path, quality=95)
        paths.append(path)
    return paths


def concurrently(service: DepthService, label: str, images: list[Path], clients: int) -> list:
    """Each image once, ``clients`` (> 1) requests at a time, each client a thread of its own; the
    predictions in the images' order. (One client is ``serve_sequential`` in this thread: the page's
    one worker thread is a lasting one, and a fresh thread here would start a second team of torch's
    intra-op threads beside this thread's idle one, a cost no page has.)"""
    results: list = [None] * len(images)
    errors: list[BaseException] = []
    lock = threading.Lock()
    todo = iter(range(len(images)))

    def client() -> None:
        try:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                results[i] = service.predict(images[i], label)
        except BaseException as exc:  # noqa: BLE001 - raised below, in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", choices=ENCODERS, default="demo")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    parser.add_argument("--threads", type=int, help="torch's intra-op threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="serve-overhead-") as tmp:
        root = Path(tmp)
        clip = {**ENCODERS[args.encoder], **(TINY_TEXT if ENCODERS[args.encoder] else {}), "random_init": True}
        cfg = load_config("demo", [f"clip.{k}={v}" for k, v in clip.items()] + [f"output_dir={root / 'run'}", "device=cpu"])
        torch.manual_seed(0)
        build_model(cfg).save_pretrained(root / "model")
        images = photos(root, args.images, *args.size)
        checkpoints, _ = find_checkpoints([root / "model"])
        label = checkpoints[0].label
        # keep: every result of a round stays on disk until the next round, as a page's recent results do
        service = DepthService(checkpoints, root / "work", keep=args.images)
        model = service.model(label)  # the same model object for both sides

        def infer_all() -> None:
            for path in images:
                model.infer(path)["depth"][0].float().cpu().numpy()

        def serve_sequential() -> list:
            return [service.predict(path, label) for path in images]

        def serve_concurrent() -> list:
            return concurrently(service, label, images, clients)

        clients = concurrent_requests()
        sides = {"infer": infer_all, "serve_sequential": serve_sequential}
        if clients > 1:
            sides["serve_concurrent"] = serve_concurrent
        for side in sides.values():  # warm-up
            side()
        per_request: dict[str, list[float]] = {name: [] for name in sides}
        cpu: dict[str, list[float]] = {name: [] for name in sides}  # the process's CPU seconds, every thread's
        model_seconds: list[float] = []
        on_demand: dict[str, list[float]] = {kind: [] for kind in ON_DEMAND}
        for _ in range(args.rounds):
            for name, side in sides.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                made = side()
                per_request[name].append((time.perf_counter() - start) / len(images))
                cpu[name].append((time.process_time() - start_cpu) / len(images))
                if name == "serve_sequential":
                    model_seconds += [prediction.seconds for prediction in made]
        # After the rounds, so that their burst of writes does not weigh on the requests' times: the last round's
        # results (keep: all of them kept), each file once.
        for prediction in made:
            for kind, times in on_demand.items():
                start = time.perf_counter()
                service.result_file(prediction.key, kind)
                times.append(time.perf_counter() - start)

    ms = {name: statistics.median(times) * 1e3 for name, times in per_request.items()}
    ms.setdefault("serve_concurrent", ms["serve_sequential"])
    model_ms = statistics.median(model_seconds) * 1e3
    print(
        f"{args.encoder} encoder, random weights, CPU ({torch.get_num_threads()} torch threads); {args.images} "
        f"{args.size[0]}x{args.size[1]} JPEGs x {args.rounds} rounds; medians per request; serve in process "
        f"(DepthService.predict, no HTTP), {concurrent_requests()} client(s) at once for serve_concurrent, as the page "
        "takes them",
        file=sys.stderr,
    )
    print(f"infer_ms={ms['infer']:.1f}")
    print(
        f"serve_sequential_ms={ms['serve_sequential']:.1f} serve_model_ms={model_ms:.1f} "
        f"serve_read_and_files_ms={ms['serve_sequential'] - model_ms:.1f}"
    )
    print(f"serve_concurrent_ms={ms['serve_concurrent']:.1f}")
    cpu_ms = {name: statistics.median(times) * 1e3 for name, times in cpu.items()}
    print(
        f"cpu per request (this process, all threads): infer_cpu_ms={cpu_ms['infer']:.1f} "
        f"serve_cpu_ms={cpu_ms['serve_sequential']:.1f} "
        f"serve_cpu_over_infer={cpu_ms['serve_sequential'] / cpu_ms['infer']:.2f}"
    )
    on_demand_ms = {kind: statistics.median(times) * 1e3 for kind, times in on_demand.items()}
    print(
        f"on demand, once per result when asked for, not in a request: view_ms={on_demand_ms['view']:.1f} "
        f"uncertainty_ms={on_demand_ms['uncertainty_color']:.1f} depth_png_ms={on_demand_ms['depth']:.1f} "
        f"ply_ms={on_demand_ms['ply']:.1f}"
    )
    print(
        f"serve_over_infer={ms['serve_concurrent'] / ms['infer']:.2f} infer_ms={ms['infer']:.1f} "
        f"serve_ms={ms['serve_concurrent']:.1f} serve_sequential_ms={ms['serve_sequential']:.1f} "
        f"serve_sequential_over_infer={ms['serve_sequential'] / ms['infer']:.2f}"
    )


if __name__ == "__main__":
    main()
