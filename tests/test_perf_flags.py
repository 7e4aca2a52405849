"""`dgc fit --precision 32|bf16` and `--compile/--no-compile` (and `dgc assign --precision`) on CPU.

On CPU, bf16 autocast applies too (AMX / AVX512-BF16 run its matmuls; torch emulates them
elsewhere): a bf16 fit trains with bf16 matmuls and still saves float32 weights. The
`--compile` test pays one torch.compile of the training loss for a single training step (about
25 s with an empty inductor cache on the 2-core CI machine, under half that with a warm cache).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from dgc_cli.cli import app

runner = CliRunner()
N = 60


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(0)
    group = rng.integers(0, 2, N)
    df = pd.DataFrame({"a": rng.normal(2.0 * group, 1.0), "b": rng.normal(size=N),
                       "y": np.where(group == 1, "sick", "well")})
    path = tmp_path / "t.parquet"
    df.to_parquet(path, index=False)
    return path


def tiny_fit(table, out, *extra, batch_size=32):
    return invoke("fit", table, "--target", "y", "-k", 2, "--epochs", 1, "--pretrain-epochs", 1,
                  "--batch-size", batch_size, "--encoder", "8", "--latent-dim", 2, "--init", "flat",
                  "--device", "cpu", "--out", out, "--quiet", *extra)


def test_bf16_on_cpu_fits_and_saves_float32(table, tmp_path):
    out = tmp_path / "out"
    result = tiny_fit(table, out, "--precision", "bf16")
    assert result.exit_code == 0, result.output
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["params"]["precision"] == "bf16"
    weights = load_file(str(out / "model" / "weights.safetensors"))
    assert weights and all(str(w.dtype) == "torch.float32" for w in weights.values())
    assignments = pd.read_parquet(out / "assignments.parquet")
    assert len(assignments) == N and np.isfinite(assignments[["prob_0", "prob_1"]]).all().all()

    result = invoke("assign", out, table, "--out", tmp_path / "a.parquet", "--precision", "bf16",
                    "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    assigned = pd.read_parquet(tmp_path / "a.parquet")
    assert list(assigned.columns) == list(assignments.columns)
    # bf16 matmuls (8 significant bits) and float32 mixture math: the fit's own float32
    # posterior to within a few 1e-3
    np.testing.assert_allclose(assigned["prob_0"], assignments["prob_0"], atol=1e-2)
    assert not np.array_equal(assigned["prob_0"], assignments["prob_0"])  # bf16 did run


@pytest.mark.parametrize("command", ["fit", "assign"])
def test_precision_16_is_rejected(table, tmp_path, command):
    out = tmp_path / "out"
    if command == "fit":
        result = tiny_fit(table, out, "--precision", "16")
    else:
        result = invoke("assign", tmp_path / "no-model", table, "--precision", "16",
                        "--out", out)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown precision '16'; use 32 or bf16" in lines[0], result.stderr
    assert not out.exists()


def test_precision_and_compile_from_config_file(table, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("precision = 16\n")
    result = tiny_fit(table, tmp_path / "out", "--config", config)
    assert result.exit_code == 2 and "unknown precision '16'" in result.stderr
    config.write_text('compile = "yes"\n')
    result = tiny_fit(table, tmp_path / "out", "--config", config)
    assert result.exit_code == 2 and "'compile'" in result.stderr


def test_compile_fits_and_writes_the_same_columns(table, tmp_path):
    plain, compiled = tmp_path / "plain", tmp_path / "compiled"
    # one batch holds the 48 training rows: a single compiled training step
    assert tiny_fit(table, plain, "--no-compile", batch_size=64).exit_code == 0
    result = tiny_fit(table, compiled, "--compile", batch_size=64)
    assert result.exit_code == 0, result.output
    config = json.loads((compiled / "model" / "config.json").read_text())
    assert config["params"]["compile"] is True
    a = pd.read_parquet(plain / "assignments.parquet")
    b = pd.read_parquet(compiled / "assignments.parquet")
    assert list(a.columns) == list(b.columns) and len(b) == N
    assert np.isfinite(b[["prob_0", "prob_1"]]).all().all()


@pytest.mark.parametrize("has_bf16, warned", [(False, True), (True, False), (None, False)])
def test_bf16_fit_warns_when_the_cpu_would_emulate_it(table, tmp_path, monkeypatch, has_bf16,
                                                      warned):
    from dgc_cli import pipeline

    monkeypatch.setattr(pipeline, "cpu_has_bf16", lambda: has_bf16)
    result = invoke("fit", table, "--target", "y", "-k", 2, "--epochs", 1, "--pretrain-epochs",
                    1, "--encoder", "8", "--latent-dim", 2, "--init", "flat", "--device", "cpu",
                    "--out", tmp_path / "out", "--precision", "bf16")
    assert result.exit_code == 0, result.output
    assert ("emulated (no AMX or AVX512-BF16)" in result.output) == warned



def test_restarts_train_side_by_side_and_every_run_is_recorded(table, tmp_path):
    out = tmp_path / "out"
    result = tiny_fit(table, out, "--restarts", 3, "--jobs", 2, "--seed", 5)
    assert result.exit_code == 0, result.output
    runs = json.loads((out / "metrics.json").read_text())["runs"]
    assert [r["seed"] for r in runs] == [5, 6, 7] and {r["init"] for r in runs} == {"flat"}
    assert {r["selection_rows"] for r in runs} == {"held out"}  # the validation rows
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["params"]["n_init"] == 3 and config["params"]["n_jobs"] == 2
    assert config["init_report"] == runs
    kept = [r for r in runs if r["kept"]]
    assert len(kept) == 1 and kept[0]["criterion"] == max(r["criterion"] for r in runs)
    assert all(np.isfinite(r["criterion"]) for r in runs)
    assert len({r["elbo"] for r in runs}) == 3  # three seeds, three different runs


@pytest.mark.parametrize("option, value, message", [
    ("--jobs", 0, "--jobs must be at least 1, or -1 for one per core, got 0"),
    ("--restarts", 0, "--restarts must be at least 1, got 0")])
def test_bad_restarts_or_jobs_is_one_line(table, tmp_path, option, value, message):
    result = tiny_fit(table, tmp_path / "out", option, value)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "out").exists()
