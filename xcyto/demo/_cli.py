"""``python demo/app.py``: the demo's command line. Parsing needs neither torch nor gradio,
so ``--help`` answers at once; the app is imported only to run it."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from xcyto.demo._shipped import (
    BUNDLE_ENV,
    DEFAULT_HOST,
    DEFAULT_PORT,
    MAX_FILE_SIZE,
    NEIGHBOURS,
    default_examples,
    example_files,
    shipped_bundles,
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="demo/app.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="xcyto demo: a cell's prediction beside its heatmaps, its nearest training cells and its "
                    "place on the training map. Research use only; not for diagnosis.",
        epilog="examples:\n"
               "  python demo/app.py                                   # the shipped bundles: Herlev, synthetic\n"
               "  python demo/app.py --bundle runs/herlev/bundle --port 8000\n"
               f"  {BUNDLE_ENV}=runs/herlev/bundle python demo/app.py --host 0.0.0.0   # reachable from the network")
    p.add_argument("--bundle", type=Path, default=None,
                   help=f"bundle folder to serve (default: ${BUNDLE_ENV}, else the shipped bundles with a menu "
                        "to choose: artifacts/herlev-bundle, real Herlev cells, then artifacts/demo-bundle, "
                        "synthetic cells)")
    p.add_argument("--examples", type=Path, default=None,
                   help="folder of example cell images to offer with --bundle (default: none, or "
                        "artifacts/examples when that bundle was trained on synthetic cells)")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on (default {DEFAULT_HOST}: this machine only)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", DEFAULT_PORT)),
                   help=f"port (default {DEFAULT_PORT}, or $GRADIO_SERVER_PORT)")
    p.add_argument("--share", action="store_true",
                   help="also open a public gradio.live tunnel (off unless given; needs internet)")
    p.add_argument("--map", dest="map_method", choices=["umap", "pca"], default="umap",
                   help="training map to place cells on (default umap; when the bundle has none stored it is "
                        "fitted in the background and PCA is shown meanwhile)")
    p.add_argument("--neighbours", type=int, default=NEIGHBOURS,
                   help=f"nearest training cells to show (default {NEIGHBOURS})")
    p.add_argument("--max-file-size", default=MAX_FILE_SIZE, help=f"largest upload (default {MAX_FILE_SIZE})")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.neighbours < 0:
        sys.exit("demo/app.py: --neighbours must be 0 or more")
    if args.bundle is not None and not args.bundle.is_dir():
        sys.exit(f"demo/app.py: no bundle folder at {args.bundle}")
    print("loading the model and starting the demo ...", file=sys.stderr, flush=True)
    from xcyto.demo._app import Demo, launch
    from xcyto.demo._views import is_synthetic
    from xcyto.errors import XcytoError

    chosen = args.bundle or (Path(os.environ[BUNDLE_ENV]) if os.environ.get(BUNDLE_ENV) else None)
    shipped = {} if chosen is not None else shipped_bundles()
    demos = {}
    try:
        if shipped:
            for label, (bundle, examples) in shipped.items():
                demos[label] = Demo(bundle, examples=example_files(examples), map_method=args.map_method,
                                    neighbours=args.neighbours)
        else:
            demo = Demo(chosen, map_method=args.map_method, neighbours=args.neighbours)
            folder = args.examples if args.examples is not None else (default_examples() if is_synthetic(demo.bundle)
                                                                       else None)
            demo.examples = example_files(folder)
            demos[demo.bundle.name] = demo
    except XcytoError as error:
        sys.exit(f"demo/app.py: {error}")
    try:
        launch(demos, host=args.host, port=args.port, share=args.share, max_file_size=args.max_file_size,
               block=True)
    finally:
        for demo in demos.values():
            demo.close()


if __name__ == "__main__":
    main()
