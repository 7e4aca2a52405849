"""SVHN (paper Sec. 5.3, Appendix B.3, Table 1): `python benchmarks/svhn.py --data-dir DIR --subset 2000 --epochs 2`.

A thin wrapper around `dgc bench svhn` (same options, same result files); `--help` lists them.
"""

import sys
from pathlib import Path

try:
    from dgc_cli.bench import bench_app
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from dgc_cli.bench import bench_app

if __name__ == "__main__":
    bench_app(["svhn", *sys.argv[1:]], prog_name=f"{Path(__file__).name}")
