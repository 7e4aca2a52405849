"""Survival (synthetic Weibull clusters and GBSG2): `python benchmarks/survival.py --seeds 5`.

A thin wrapper around `dgc bench survival` (same options, same result files); `--help` lists them.
"""

import sys
from pathlib import Path

try:
    from dgc_cli.bench import bench_app
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from dgc_cli.bench import bench_app

if __name__ == "__main__":
    bench_app(["survival", *sys.argv[1:]], prog_name=f"{Path(__file__).name}")
