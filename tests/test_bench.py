"""`dgc bench`: loaders on tiny files in the real formats, one very short run per bench, and the
result schema every bench shares. Real-data checks skip when ../shared/data is absent."""

import gzip
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from typer.testing import CliRunner

from dgc_cli import bench
from dgc_cli.bench import METHODS, METRICS, bench_app

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
runner = CliRunner()

# A small conv net for the SVHN pipeline test: the paper's B.3 net takes minutes per epoch on CPU.
TINY_SVHN = {
    "latent_dim": 4, "head": (8,), "pretrain_epochs": 1, "batch_size": 16,
    "encoder": {"type": "conv", "activation": "relu", "dense": [16],
                "layers": [{"out": 4, "kernel": 3, "pool": 4, "pool_stride": 4}]},
    "decoder": {"type": "deconv", "activation": "relu", "dense": [8],
                "layers": [{"out": 4, "kernel": 4, "stride": 1, "padding": 0},
                           {"out": 4, "kernel": 4, "stride": 2, "padding": 1},
                           {"out": 4, "kernel": 4, "stride": 2, "padding": 1},
                           {"out": 3, "kernel": 4, "stride": 2, "padding": 1}]},
}


# --------------------------------------------------------------------------- tiny files


def write_idx(path: Path, data: np.ndarray, magic: int) -> None:
    header = struct.pack(">i", magic) + struct.pack(f">{data.ndim}i", *data.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + data.astype(np.uint8).tobytes())


@pytest.fixture
def mnist_dir(tmp_path):
    """Four gzipped IDX files: digits drawn as bars so 2s and 7s differ a little."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "mnist"
    folder.mkdir()
    for prefix, n in (("train", 72), ("t10k", 32)):
        labels = np.resize(np.array([2, 7, 2, 7, 1, 3]), n)
        images = rng.integers(0, 30, (n, 28, 28))
        images[labels == 2, 8:12, 4:24] = 255
        images[labels == 7, 4:24, 16:20] = 255
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images, 2051)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels, 2049)
    return folder


@pytest.fixture
def cifar_path(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "cifar_tiny.npz"
    np.savez(path, x=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
             y=np.arange(20, dtype=np.uint8) % 10)
    return path


def write_svhn(path: Path, n: int, seed: int = 0) -> np.ndarray:
    """An SVHN .mat in the original layout: X (32, 32, 3, N) uint8, y (N, 1), 10 for digit 0."""
    rng = np.random.default_rng(seed)
    digits = np.arange(n) % 10
    scipy.io.savemat(path, {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                            "y": np.where(digits == 0, 10, digits).reshape(n, 1).astype(np.uint8)})
    return digits


# --------------------------------------------------------------------------- schema


def check_result(payload: dict, bench_name: str, out: Path, reduced=True, figures=()):
    for key, kind in (("bench", str), ("command", str), ("reduced", bool), ("seconds", float),
                      ("machine", str), ("results", list)):
        assert isinstance(payload[key], kind), key
    assert payload["bench"] == bench_name and payload["reduced"] is reduced
    assert payload["results"], "no result rows"
    for row in payload["results"]:
        assert row["method"] in METHODS and row["metric"] in METRICS
        assert row["split"] in ("train", "test")
        assert row["value"] is None or isinstance(row["value"], float)
        assert row["sd"] is None or isinstance(row["sd"], float)
    stem = f"{bench_name}-reduced" if reduced else bench_name
    on_disk = json.loads((out / f"{stem}.json").read_text())
    assert on_disk["results"] == json.loads(json.dumps(payload["results"]))
    assert on_disk["command"].startswith(f"dgc bench {bench_name}")
    md = (out / f"{stem}.md").read_text()
    assert "REDUCED" in md if reduced else "REDUCED" not in md
    assert "| method | K | metric | train | test |" in md
    for name in figures:
        png = out / f"{stem}-{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert not list(out.glob(".*tmp*")), "temporary files left behind"
    return {(r["method"], r["metric"], r["split"]): r for r in payload["results"]}


def load_written(out: Path, stem: str) -> dict:
    return json.loads((out / f"{stem}.json").read_text())


# --------------------------------------------------------------------------- benches


def test_pacman_end_to_end(tmp_path):
    out = tmp_path / "res"
    result = runner.invoke(bench_app, ["pacman", "--seeds", "2", "--epochs", "2",
                                       "--n-per-annulus", "300", "--n-train-per-annulus", "225",
                                       "--init", "gmm", "--threads", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "REDUCED" in result.output
    rows = check_result(load_written(out, "pacman-reduced"), "pacman", out,
                        figures=("fig3", "clusters", "fig4"))
    for method in ("DGC", "VaDE", "KMeans", "GMM", "Spectral", "Agglomerative"):
        row = rows[(method, "cluster_acc_unlabeled", "test")]
        assert 0.5 <= row["value"] <= 1 and row["runs"] == 2 and row["sd"] is not None
    assert ("DGC", "cluster_acc", "train") in rows and ("VaDE", "cluster_acc", "train") not in rows


def test_mnist_end_to_end_from_idx_and_npz(tmp_path, mnist_dir, cifar_path):
    out = tmp_path / "res"
    result = runner.invoke(bench_app, ["mnist", "--data-dir", str(mnist_dir), "--cifar-dir",
                                       str(cifar_path), "--epochs", "1", "--init", "gmm",
                                       "--threads", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "REDUCED" in result.output  # fewer than the paper's 100 epochs
    payload = load_written(out, "mnist-reduced")
    rows = check_result(payload, "mnist", out, figures=("confusion", "samples"))
    for method in ("DGC", "VaDE", "DGC-no-decoder", "KMeans"):
        assert (method, "cluster_acc_unlabeled", "test") in rows
    assert ("DGC", "class_acc", "test") in rows and ("DGC-no-decoder", "cluster_acc", "test") in rows
    # The tiny files hold 24 test images of 2s and 7s; the confusion matrices count all of them.
    assert payload["config"]["n_train"] == 48 and payload["config"]["n_test"] == 22
    for key in ("VaDE", "DGC"):
        c = payload["confusion"][key]
        assert np.asarray(c["matrix"]).sum() == 22
        assert set(c["columns"]) <= {"2", "2B", "7", "7B"} and len(c["rows"]) == len(c["matrix"])


def test_svhn_loader_standard_files_and_subset(tmp_path):
    folder = tmp_path / "svhn"
    folder.mkdir()
    digits = write_svhn(folder / "train_32x32.mat", 30)
    write_svhn(folder / "test_32x32.mat", 12, seed=1)
    write_svhn(folder / "extra_32x32.mat", 10, seed=2)
    x_tr, y_tr, x_te, y_te, _, standard = bench.load_svhn(folder)
    assert standard and x_tr.shape == (40, 3, 32, 32) and x_te.shape == (12, 3, 32, 32)
    assert x_tr.dtype == np.float32 and 0 <= x_tr.min() and x_tr.max() <= 1
    np.testing.assert_array_equal(y_tr[:30], digits)  # label 10 read as digit 0
    raw = scipy.io.loadmat(folder / "train_32x32.mat")["X"]
    np.testing.assert_allclose(x_tr[3], raw[..., 3].transpose(2, 0, 1) / 255.0, rtol=1e-6)
    x_tr, _, x_te, _, _, _ = bench.load_svhn(folder, subset=8, use_extra=False)
    assert len(x_tr) == 8 and len(x_te) == 2


def test_svhn_loader_splits_one_subset_file(tmp_path):
    write_svhn(tmp_path / "test_32x32_first50.mat", 50)
    a = bench.load_svhn(tmp_path, seed=3)
    b = bench.load_svhn(tmp_path / "test_32x32_first50.mat", seed=3)
    assert not a[5] and len(a[0]) == 40 and len(a[2]) == 10
    np.testing.assert_array_equal(a[1], b[1])
    assert "seed=3" in a[4]
    write_svhn(tmp_path / "other.mat", 5)
    with pytest.raises(FileNotFoundError, match="exactly one"):
        bench.load_svhn(tmp_path)


def test_svhn_end_to_end_tiny_net(tmp_path):
    write_svhn(tmp_path / "test_32x32_first40.mat", 40)
    out = tmp_path / "res"
    with bench.cpu_threads(1):
        payload = bench.run_svhn(tmp_path, clusters=(1, 3), epochs=1, init="gmm", out=out,
                                 overrides=TINY_SVHN)
    rows = check_result(payload, "svhn", out, figures=("table1",))
    ks = {r["n_clusters"] for r in payload["results"]}
    assert ks == {1, 3}
    one = [r for r in payload["results"] if r["n_clusters"] == 1 and r["method"] == "DGC"
           and r["metric"] == "cluster_acc" and r["split"] == "test"]
    y_test = bench.load_svhn(tmp_path)[3]
    assert one[0]["value"] == pytest.approx(np.bincount(y_test).max() / len(y_test))  # K = 1
    assert ("DGC", "class_acc", "test") in rows and any("overridden" in n for n in payload["notes"])


def test_svhn_command_reports_missing_data(tmp_path):
    result = runner.invoke(bench_app, ["svhn", "--data-dir", str(tmp_path / "nowhere"),
                                       "--out", str(tmp_path)])
    assert result.exit_code == 1 and "error" in result.output and "Traceback" not in result.output
    result = runner.invoke(bench_app, ["svhn", "--clusters", "10,x"])
    assert result.exit_code == 2


def test_survival_end_to_end(tmp_path):
    out = tmp_path / "res"
    result = runner.invoke(bench_app, ["survival", "--seeds", "1", "--n", "200", "--epochs", "2",
                                       "--init", "gmm", "--threads", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    payload = load_written(out, "survival-reduced")
    check_result(payload, "survival", out, figures=("synthetic-km", "gbsg2-km"))
    by = {(r["dataset"], r["method"], r["metric"], r["split"]): r for r in payload["results"]}
    for ds in ("synthetic", "gbsg2"):
        for method in ("DGC", "CoxPH", "KMeans", "GMM", "VaDE"):
            assert 0 <= by[(ds, method, "c_index", "test")]["value"] <= 1
        assert 0 <= by[(ds, "DGC", "logrank_p", "test")]["value"] <= 1 or \
            by[(ds, "DGC", "logrank_p", "test")]["value"] is None  # one cluster: no test
    assert ("synthetic", "DGC", "nmi", "test") in by and ("gbsg2", "DGC", "nmi", "test") not in by
    assert by[("synthetic", "CoxPH", "c_index", "test")]["n_clusters"] is None


def test_gbsg2_table_layout():
    from dgc_cli.baselines import drop_reference, gbsg2_table

    table = gbsg2_table(np.arange(500))
    assert table.x.shape == (686, 12) and len(table.columns) == 12
    assert table.blocks == [("gaussian", 5), ("categorical", 2), ("categorical", 2), ("categorical", 3)]
    np.testing.assert_allclose(table.x[:500, :5].mean(0), 0, atol=1e-5)
    np.testing.assert_array_equal(table.x[:, 5:].sum(1), 3)  # one level per categorical group
    assert drop_reference(table).shape == (686, 9)
    assert set(np.unique(table.event)) == {0, 1} and (table.time > 0).all()


def test_results_mean_sd_and_schema_guard():
    res = bench.Results()
    for v in (0.5, 0.7):
        res.add("d", "DGC", "cluster_acc", "test", v, 2)
    res.add("d", "CoxPH", "c_index", "test", float("nan"), None)
    rows = {r["method"]: r for r in res.rows()}
    assert rows["DGC"]["value"] == pytest.approx(0.6)
    assert rows["DGC"]["sd"] == pytest.approx(math.sqrt(0.02))
    assert rows["CoxPH"]["value"] is None and rows["CoxPH"]["sd"] is None
    assert rows["DGC"]["runs"] == 2 and rows["CoxPH"]["runs"] == 0
    with pytest.raises(ValueError, match="schema"):
        res.add("d", "DEC", "cluster_acc", "test", 0.5, 2)


def test_labelled_confusion_names_rows_by_matched_label():
    truth = np.array([0, 0, 1, 1, 2, 3, 3])
    labels = np.array([2, 2, 0, 0, 1, 3, 3])
    c = bench.labelled_confusion(truth, labels, ("2", "2B", "7", "7B"), "test")
    assert c["rows"] == ["2", "2B", "7", "7B"] and c["accuracy"] == 1.0
    np.testing.assert_array_equal(np.diag(c["matrix"]), [2, 2, 1, 2])


# --------------------------------------------------------------------------- real data


@pytest.mark.skipif(not (SHARED_DATA / "svhn").is_dir(), reason="../shared/data/svhn is absent")
def test_real_svhn_subset_file_loads_and_splits():
    x_tr, y_tr, x_te, y_te, description, standard = bench.load_svhn(SHARED_DATA / "svhn", seed=0)
    assert not standard and len(x_tr) == 8000 and len(x_te) == 2000
    assert x_tr.shape[1:] == (3, 32, 32) and set(np.unique(y_tr)) == set(range(10))
    assert "test_32x32_first10000.mat" in description


@pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir() or not (SHARED_DATA / "cifar10").is_dir(),
                    reason="../shared/data/mnist or cifar10 is absent")
def test_real_noisy_mnist_counts_match_the_paper():
    from dgc_cli.datasets import make_noisy_mnist

    test = make_noisy_mnist(SHARED_DATA / "mnist", SHARED_DATA / "cifar10", "test", random_state=1)
    assert test.x.shape == (2060, 784)
    assert abs(test.background.mean() - 0.5) < 0.01


@pytest.mark.parametrize("name", ["pacman", "mnist", "svhn", "survival"])
def test_benchmark_scripts_wrap_the_commands(name, monkeypatch, capsys):
    import runpy

    script = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    monkeypatch.setattr("sys.argv", [str(script), "--help"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(script), run_name="__main__")
    assert done.value.code == 0
    assert "--out" in capsys.readouterr().out


@pytest.mark.parametrize("flag, value, recorded, bad, message", [
    ("--precision", "bf16", '"precision": "bf16"', "16", "unknown precision '16'; use 32 or bf16"),
    ("--jobs", "3", '"n_jobs": 3', "0", "must be at least 1, or -1 for one per core")])
def test_bench_option_is_passed_on_and_recorded(tmp_path, flag, value, recorded, bad, message):
    out = tmp_path / "res"
    args = ["pacman", "--seeds", "1", "--epochs", "1", "--n-per-annulus", "200",
            "--n-train-per-annulus", "150", "--threads", "1", "--out", str(out)]
    result = runner.invoke(bench_app, [*args, flag, value])
    assert result.exit_code == 0, result.output
    written = load_written(out, "pacman-reduced")
    assert f"{flag} {value}" in written["command"]
    assert recorded in json.dumps(written)  # the settings the models were fitted with
    result = runner.invoke(bench_app, [*args, flag, bad])
    assert result.exit_code == 2 and message in result.output
