"""The tabular default batch size on a large table: time and accuracy against the batch.

`DGC` picks up to 256 rows per batch, and on large tables up to 1,024 (n / 200). This script
measures what that choice costs and saves on make_two_groupings with 200,000 rows (160,000
training, 40,000 test), K = 2, categorical and continuous responses, one torch thread, at the
old default (batch 256), the new one (1,024) and, for reference, 1,024 with half the epochs.
It writes benchmarks/results/batch-size.json.

    python benchmarks/batch_size.py            # about 4 minutes here
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dgc_cli import DGC  # noqa: E402
from dgc_cli.datasets import make_two_groupings  # noqa: E402
from dgc_cli.metrics import cluster_accuracy  # noqa: E402

SETTINGS = [  # (batch size, epochs; None: the default schedule's)
    (256, None), (1024, None), (1024, 15)]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    for task in ("categorical", "continuous"):
        data = make_two_groupings(n=args.rows, task=task, random_state=0)
        m = int(0.8 * args.rows)
        x, y, x_test, y_test = data.x[:m], data.y[:m], data.x[m:], data.y[m:]
        for batch, epochs in SETTINGS:
            started = time.perf_counter()
            est = DGC(n_clusters=2, batch_size=batch, epochs=epochs, random_state=0,
                      device="cpu").fit(x, y)
            seconds = time.perf_counter() - started
            s = est.schedule_
            row = {"task": task, "batch_size": s.batch_size, "epochs": s.epochs,
                   "pretrain_epochs": s.pretrain_epochs, "fit_seconds": round(seconds, 1),
                   "test_accuracy_with_y": round(cluster_accuracy(data.b[m:], est.predict(x_test, y_test)), 4),
                   "test_accuracy_without_y": round(cluster_accuracy(data.b[m:], est.predict(x_test)), 4),
                   "bayes_accuracy_without_y": round(float(data.bayes_accuracy_b), 4)}
            results.append(row)
            print(row, flush=True)
    payload = {"bench": "batch-size", "command": "python benchmarks/batch_size.py"
               + ("" if argv is None and len(sys.argv) == 1 else " " + " ".join(sys.argv[1:] if argv is None else argv)),
               "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
               "reduced": args.rows < 200_000,  # the full run is 200,000 rows
               "rows": args.rows, "training_rows": int(0.8 * args.rows), "torch_threads": args.threads,
               "data": "make_two_groupings(n=rows, random_state=0): the response follows the weak "
                       "grouping B; accuracies are against B on the last 20 % of rows",
               "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / ("batch-size.json" if args.rows == 200_000 else f"batch-size-{args.rows}.json")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
