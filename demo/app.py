"""xcyto demo: ``python demo/app.py [--bundle PATH] [--host H] [--port P] [--share]`` (``--help`` for more).

Serves the shipped bundles (``artifacts/herlev-bundle``, real Herlev cells, first; then
``artifacts/demo-bundle``, synthetic cells), with a menu to switch, on http://127.0.0.1:7860
unless told otherwise. The app itself lives in
``xcyto/demo/_app.py``; this file only makes it runnable from a checkout.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from xcyto.demo import main  # noqa: E402

if __name__ == "__main__":
    main()
