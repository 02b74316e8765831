"""Latency of the demo for one cell: the full HTTP round trip against ``xcyto.explain`` alone.

The app runs in a subprocess on a free loopback port (as ``python demo/app.py`` would, with
its training map ready). For each request this process times, through ``gradio_client``:

- the complete response of ``/explain`` (every value; files as URLs, ``download_files=False``),
  against the time ``explain()`` itself took inside that same request (its ``timings_ms``,
  returned in the response): same process, same moment, so the difference is what the app
  adds (upload, queue, reading the image, the views and the map, JSON, Gradio's encoding
  of the images, the event stream);
- the same request with the client's default of downloading every output file (cell,
  overlays, neighbours, nearest per class, map, JSON: one HTTP GET each, one after another);
- ``/figure``: the downloadable PNG figure (``Explanation.plot()``), which the page asks for
  after the answer is shown; ``/opacity``: re-blending the kept maps.

A no-op Gradio app (one queued endpoint taking the same upload) gives the floor of any
Gradio app and ``gradio_client``. A reference ``explain()`` in this process, before the server starts, shows the floor when
nothing else runs. It runs in a worker thread, as Gradio calls the app: on a busy 2-core
machine torch's main-thread pool of 2 threads was 3x slower than a worker thread's.

    python bench/demo_latency.py                       # shipped bundle, Grad-CAM + IG, then Grad-CAM
    python bench/demo_latency.py --bundle runs/herlev/bundle --image cell.bmp --repeats 9
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SERVER = """
import sys
sys.path.insert(0, {repo!r})
from xcyto.demo import Demo, launch
demo = Demo({bundle!r}, map_method={map_method!r})
if demo.maps is not None:
    demo.maps.wait()  # time requests, not the first fit of a UMAP map
launch(demo, port={port}, quiet=True, block=True)
"""
# The floor of any Gradio app: the same upload to a queued endpoint that does nothing.
NOOP_SERVER = """
import gradio as gr
with gr.Blocks() as blocks:
    image, text = gr.Image(type="filepath"), gr.Textbox()
    image.change(lambda payload: "ok", image, text, api_name="explain", preprocess=False)
blocks.queue(default_concurrency_limit=1).launch(server_name="127.0.0.1", server_port={port}, quiet=True,
                                                 ssr_mode=False)
"""


def timed(function, repeats: int) -> list[float]:
    return [_seconds(function) for _ in range(repeats)]


def _seconds(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def wait_for(url: str, process: subprocess.Popen, timeout: float = 600):
    from gradio_client import Client

    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            sys.exit(f"the app exited with code {process.returncode}")
        try:
            return Client(url, verbose=False, download_files=False)
        except Exception:  # not up yet
            time.sleep(1)
    sys.exit(f"the app did not answer at {url} within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=REPO / "artifacts" / "demo-bundle")
    parser.add_argument("--image", type=Path, default=REPO / "artifacts" / "examples" / "Koilocytotic-1.png")
    parser.add_argument("--methods", nargs="+", default=["gradcam,integrated_gradients", "gradcam"],
                        help="method sets to time, each comma-separated")
    parser.add_argument("--map", dest="map_method", default="umap", choices=["umap", "pca"])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if not (args.bundle / "bundle.json").is_file():
        sys.exit(f"no bundle at {args.bundle}: build the demo bundle with 'make artifacts' or pass --bundle")
    if not args.image.is_file():
        sys.exit(f"no image at {args.image}: pass --image")

    import torch
    from gradio_client import Client, handle_file

    from tools.demo_browser import free_port
    from xcyto.explain import explain, resolve_bundle

    image = str(args.image)
    method_sets = [[m.strip() for m in entry.split(",") if m.strip()] for entry in args.methods]
    bundle = resolve_bundle(args.bundle)
    alone = {}
    with ThreadPoolExecutor(1) as worker:  # a worker thread, as Gradio runs the app's functions
        for methods in method_sets:  # before the server exists: nothing else in this run competes
            def floor(methods=methods):
                explain(image, bundle=bundle, methods=methods)
                return statistics.median(timed(lambda: explain(image, bundle=bundle, methods=methods), args.repeats))

            alone[tuple(methods)] = worker.submit(floor).result()
    environment = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    port, noop_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}/"
    code = SERVER.format(repo=str(REPO), bundle=str(args.bundle), map_method=args.map_method, port=port)
    server = subprocess.Popen([sys.executable, "-c", code], env=environment)
    noop = subprocess.Popen([sys.executable, "-c", NOOP_SERVER.format(port=noop_port)], env=environment)
    try:
        floor_client = wait_for(f"http://127.0.0.1:{noop_port}/", noop)
        quick = wait_for(url, server)
        downloading = Client(url, verbose=False)
        print(f"bundle {bundle.name} ({bundle.architecture}, {bundle.input_size} px); image {args.image.name}; "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
              f"median of {args.repeats}, seconds\n")
        print("| methods | explain() alone | explain() in the request | client: complete response | app adds | "
              "client + downloading the files | /figure PNG | /opacity |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        floor_client.predict(handle_file(image), api_name="/explain")
        gradio_floor = statistics.median(timed(lambda: floor_client.predict(handle_file(image), api_name="/explain"),
                                               args.repeats))
        for methods in method_sets:
            def request(client, methods=methods):
                return client.predict(handle_file(image), methods, "predicted class", 0.75, api_name="/explain")

            request(quick)
            request(downloading)
            inside, complete, added, downloaded, figure, reblend = [], [], [], [], [], []
            for _ in range(args.repeats):
                started = time.perf_counter()
                details = request(quick)[-1]
                complete.append(time.perf_counter() - started)
                inside.append(details["timings_ms"]["total"] / 1000)
                added.append(complete[-1] - inside[-1])
                figure.append(_seconds(lambda: quick.predict(api_name="/figure")))
                reblend.append(_seconds(lambda: quick.predict(0.5, api_name="/opacity")))
                downloaded.append(_seconds(lambda: request(downloading)))
            inside_s, added_s = statistics.median(inside), statistics.median(added)
            print(f"| {', '.join(methods)} | {alone[tuple(methods)]:.2f} | {inside_s:.2f} | "
                  f"{statistics.median(complete):.2f} | {added_s:.2f} ({100 * added_s / inside_s:.0f}%) | "
                  f"{statistics.median(downloaded):.2f} | {statistics.median(figure):.2f} | "
                  f"{statistics.median(reblend):.2f} |")
        print(f"\nGradio's own floor, the same upload to a queued no-op endpoint through gradio_client: "
              f"{gradio_floor:.2f} s (part of 'app adds').")
    finally:
        for process in (server, noop):
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
