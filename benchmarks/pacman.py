"""Pacman (paper Sec. 5.2, Appendix B.2): `python benchmarks/pacman.py --seeds 10`.

A thin wrapper around `dgc bench pacman` (same options, same result files); `--help` lists them.
"""

import sys
from pathlib import Path

try:
    from dgc_cli.bench import bench_app
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from dgc_cli.bench import bench_app

if __name__ == "__main__":
    bench_app(["pacman", *sys.argv[1:]], prog_name=f"{Path(__file__).name}")
