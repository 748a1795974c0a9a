"""Install mmcv 2.1.0 with its compiled CPU ops into the running environment, building it once.

mmcv 2.1.0 publishes no wheel for this stack, so it is compiled from the sdist against the
torch already installed (``--no-build-isolation``; MMCV_WITH_OPS=1, FORCE_CUDA=0, MAX_JOBS from
the environment). The built wheel is kept in ``WHEEL_DIR/torch-<version>/`` (the torch build
it was compiled against) and installed from there on later runs, which skips the 7-15 minute
compile. Used by tox.ini's ``downstream`` environment.

Usage: python install_mmcv.py --wheel-dir DIR [--constraints FILE] [--version 2.1.0]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel-dir", type=Path, required=True)
    parser.add_argument("--constraints", type=Path)
    parser.add_argument("--version", default="2.1.0")
    args = parser.parse_args(argv)

    import torch  # the build's torch; the wheel is only valid with this very build

    cache = args.wheel_dir / f"torch-{torch.__version__}"
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob(f"mmcv-{args.version}-*.whl"))
    if not wheels:
        env = {"MMCV_WITH_OPS": "1", "FORCE_CUDA": "0", "MAX_JOBS": "2", **os.environ}
        print(
            f"building mmcv {args.version} against torch {torch.__version__} "
            f"(MAX_JOBS={env['MAX_JOBS']}) into {cache}",
            flush=True,
        )
        start = time.monotonic()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-build-isolation",
                "--no-deps",
                "-w",
                str(cache),
                f"mmcv=={args.version}",
            ],
            check=True,
            env=env,
        )
        print(f"built in {time.monotonic() - start:.0f} s", flush=True)
        wheels = sorted(cache.glob(f"mmcv-{args.version}-*.whl"))
        if not wheels:
            print(f"error: pip wheel left no mmcv-{args.version} wheel in {cache}", file=sys.stderr)
            return 1
    cmd = [sys.executable, "-m", "pip", "install", str(wheels[-1])]
    if args.constraints:
        cmd += ["-c", str(args.constraints)]
    subprocess.run(cmd, check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
