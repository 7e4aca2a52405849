"""Two CPU processes with gloo train like one process on the same rows."""

import os
import socket

import numpy as np
import torch.distributed as dist
import torch.multiprocessing as mp

from dgc_cli import DGC, distributed
from dgc_cli.datasets import make_two_groupings
from dgc_cli.metrics import ari, cluster_accuracy

PARAMS = dict(n_clusters=4, epochs=40, pretrain_epochs=10, batch_size=128, random_state=0,
              device="cpu")


def data():
    d = make_two_groupings(n=1200, task="categorical", random_state=1)
    return d.x, d.y, d.ab


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), OMP_NUM_THREADS="1")
    assert distributed.init_from_env()
    try:
        x, y, _ = data()
        rows = distributed.shard(len(x))
        model = DGC(**PARAMS).fit(x[rows], y[rows])
        if distributed.is_main():
            np.save(out, np.stack([model.predict(x, y), model.predict(x)]))
            with open(out + ".elbo", "w") as f:
                f.write(str(model.score(x, y)))
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_match_one_process(tmp_path):
    out = str(tmp_path / "labels.npy")
    mp.start_processes(worker, args=(2, free_port(), out), nprocs=2, start_method="spawn")
    labels_with_y, labels_without_y = np.load(out)
    elbo_ddp = float(open(out + ".elbo").read())

    x, y, truth = data()
    single = DGC(**PARAMS).fit(x, y)
    acc_single = cluster_accuracy(truth, single.predict(x, y))
    acc_ddp = cluster_accuracy(truth, labels_with_y)
    print(f"DDP 2x gloo: accuracy {acc_ddp:.3f} vs single {acc_single:.3f}; "
          f"ELBO {elbo_ddp:.2f} vs {single.score(x, y):.2f}")
    assert acc_single >= 0.95 and acc_ddp >= 0.95
    assert ari(single.predict(x, y), labels_with_y) >= 0.9
    assert abs(elbo_ddp - single.score(x, y)) <= 0.05 * abs(single.score(x, y))
    assert ari(single.predict(x), labels_without_y) >= 0.5
