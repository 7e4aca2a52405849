"""The real `dgc` app through typer's CliRunner, on small generated tables of each task type."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from dgc_cli.cli import app

runner = CliRunner()
N = 120
# The smallest schedule that still runs every stage: tests check plumbing, not model quality.
FAST = ["--epochs", "3", "--pretrain-epochs", "1", "--batch-size", "64", "--init", "gmm",
        "--latent-dim", "4", "--encoder", "16", "--device", "cpu", "--quiet"]
LOUD = [a for a in FAST if a != "--quiet"]
DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def make_table(task: str, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 2, N)
    df = pd.DataFrame({
        "pid": [f"p{i:03d}" for i in range(N)],
        "a": rng.normal(2.0 * group, 1.0),
        "b": rng.normal(size=N),
        "colour": rng.choice(["red", "green", "blue"], N),
        "smoker": rng.integers(0, 2, N),
    })
    df.loc[[3, 8], "b"] = np.nan
    if task == "categorical":
        df["y"] = np.where(group == 1, "sick", "well")
    elif task == "continuous":
        df["y"] = 3.0 * group + rng.normal(0, 0.3, N)
        df.loc[[5, 6, 7], "y"] = np.nan  # left out of training, still assigned
    else:
        df["time"] = rng.exponential(np.where(group == 1, 2.0, 8.0)) + 0.01
        df["event"] = rng.integers(0, 2, N)
        df.loc[0, "event"] = 1
    return df


RESPONSE = {"categorical": ["--target", "y"], "continuous": ["--target", "y"],
            "survival": ["--time", "time", "--event", "event"]}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Each task fitted once: {task: (data path, out folder, frame, fit result)}."""
    root = tmp_path_factory.mktemp("fit")
    runs = {}
    for task, suffix in (("categorical", ".csv"), ("continuous", ".parquet"),
                         ("survival", ".parquet")):
        df = make_table(task)
        path = root / f"{task}{suffix}"
        df.to_csv(path, index=False) if suffix == ".csv" else df.to_parquet(path, index=False)
        out = root / f"out-{task}"
        result = invoke("fit", path, *RESPONSE[task], "-k", 2, "--id", "pid", "--csv",
                        "--out", out, *FAST)
        runs[task] = (path, out, df, result)
    return runs


TASKS = ["categorical", "continuous", "survival"]


@pytest.mark.parametrize("task", TASKS)
def test_fit_writes_model_assignments_metrics_and_report(fitted, task):
    path, out, df, result = fitted[task]
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"model", "assignments.parquet", "assignments.csv",
                                              "metrics.json", "report.md", "report.html",
                                              "figures"}
    assert {p.name for p in (out / "model").iterdir()} == {"config.json", "weights.safetensors"}
    a = pd.read_parquet(out / "assignments.parquet")
    pred = {"categorical": ["pred_y", "proba_sick", "proba_well"], "continuous": ["pred_y"],
            "survival": ["risk", "pred_median_time"]}[task]
    assert list(a.columns) == ["pid", "cluster", "prob_0", "prob_1", "used_response", *pred]
    assert a["pid"].tolist() == df["pid"].tolist()  # row order and ids as in DATA
    np.testing.assert_allclose(a[["prob_0", "prob_1"]].sum(axis=1), 1.0, atol=1e-6)
    assert (a["cluster"] == a[["prob_0", "prob_1"]].to_numpy().argmax(axis=1)).all()
    assert pd.read_csv(out / "assignments.csv")["cluster"].tolist() == a["cluster"].tolist()

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == task and metrics["n_clusters"] == 2
    assert sum(metrics["cluster_sizes"].values()) == N
    assert set(metrics["elbo_terms"]["train"]) >= {"reconstruction", "kl_z", "elbo"}
    key = {"categorical": "accuracy", "continuous": "rmse", "survival": "c_index"}[task]
    assert 0 <= metrics["validation"][key] < 10
    assert metrics["rows"]["validation"] == round(0.2 * metrics["rows"]["with_response"])
    assert "ari_vs_gmm" in metrics
    assert ("logrank" in metrics) == (task == "survival")

    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4
    assert "src='http" not in html and 'src="http' not in html
    md = (out / "report.md").read_text()
    assert "## Clusters" in md and "figures/latent.png" in md
    if task == "categorical":
        assert np.isclose(a[["proba_sick", "proba_well"]].sum(axis=1), 1.0).all()
        assert set(a["pred_y"]) <= {"sick", "well"}


def test_rows_with_missing_response_are_assigned_from_features(fitted):
    _, out, df, _ = fitted["continuous"]
    a = pd.read_parquet(out / "assignments.parquet")
    assert len(a) == N
    assert a["used_response"].tolist() == df["y"].notna().tolist()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rows"]["dropped_missing_response"] == 3


@pytest.mark.parametrize("task", TASKS)
def test_assign_reproduces_fit_labels_and_posterior(fitted, tmp_path, task):
    path, out, _, _ = fitted[task]
    target = tmp_path / "a.parquet"
    result = invoke("assign", out, path, "--out", target, "--batch-rows", 50)
    assert result.exit_code == 0, result.output
    fit_rows, assigned = pd.read_parquet(out / "assignments.parquet"), pd.read_parquet(target)
    assert list(assigned.columns) == list(fit_rows.columns)
    assert assigned["cluster"].tolist() == fit_rows["cluster"].tolist()
    np.testing.assert_allclose(assigned.filter(like="prob").to_numpy(),
                               fit_rows.filter(like="prob").to_numpy(), atol=1e-5)
    assert assigned["used_response"].tolist() == fit_rows["used_response"].tolist()


@pytest.mark.parametrize("task", TASKS)
def test_fit_assignments_written_in_chunks_equal_one_frame(fitted, tmp_path, task):
    """dgc fit writes its assignments chunk by chunk (write_assignments); a chunk of 7 rows
    gives the file that one whole-table assignment_frame gives, in Parquet and in CSV."""
    from dgc_cli.pipeline import assignment_frame, load_model, write_assignments
    from dgc_cli.tabular import read_table

    path, out, _, _ = fitted[task]
    model, pre, schema = load_model(out, "cpu")
    df = read_table(path)
    x = pre.transform(df)
    labels = write_assignments(model, pre, schema, df, x,
                               [tmp_path / "a.parquet", tmp_path / "a.csv"], chunk=7)
    whole = assignment_frame(model, pre, schema, df, use_response=True, x=x)
    chunked = pd.read_parquet(tmp_path / "a.parquet")
    pd.testing.assert_frame_equal(chunked, whole, check_dtype=False)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a.csv"),
                                  pd.read_csv(out / "assignments.csv"), check_dtype=False)
    assert labels.tolist() == whole["cluster"].tolist()
    assert chunked["cluster"].tolist() == pd.read_parquet(out / "assignments.parquet")["cluster"].tolist()


def test_assign_without_response_uses_the_features_alone(fitted, tmp_path):
    path, out, df, _ = fitted["survival"]
    bare = tmp_path / "new.csv"
    df.drop(columns=["time", "event"]).iloc[::-1].to_csv(bare, index=False)
    result = invoke("assign", out / "model", bare, "--out", tmp_path / "bare.parquet")
    assert result.exit_code == 0, result.output
    assert "Eq. 9" in result.output
    forced = tmp_path / "forced.parquet"
    assert invoke("assign", out, path, "--out", forced, "--no-use-response").exit_code == 0
    a, b = pd.read_parquet(tmp_path / "bare.parquet"), pd.read_parquet(forced)
    assert not a["used_response"].any()
    assert a["pid"].tolist() == df["pid"].tolist()[::-1]  # the new table's own order
    merged = a.merge(b, on="pid", suffixes=("", "_forced"))
    assert (merged["cluster"] == merged["cluster_forced"]).all()
    np.testing.assert_allclose(merged["prob_0"], merged["prob_0_forced"], atol=1e-5)


def test_assign_streams_small_batches_in_order(fitted, tmp_path):
    path, out, df, _ = fitted["continuous"]
    whole, pieces = tmp_path / "whole.parquet", tmp_path / "pieces.parquet"
    assert invoke("assign", out, path, "--out", whole, "-q").exit_code == 0
    assert invoke("assign", out, path, "--out", pieces, "--batch-rows", 7, "-q").exit_code == 0
    a, b = pd.read_parquet(whole), pd.read_parquet(pieces)
    assert b["pid"].tolist() == df["pid"].tolist()
    assert (a["cluster"] == b["cluster"]).all()
    np.testing.assert_allclose(a["pred_y"], b["pred_y"], rtol=1e-5)


def test_report_rerenders_for_a_model_and_table(fitted, tmp_path):
    path, out, _, _ = fitted["survival"]
    target = tmp_path / "rep"
    result = invoke("report", out, path, "--out", target)
    assert result.exit_code == 0, result.output
    assert {"report.md", "report.html", "metrics.json", "figures"} <= {p.name for p in target.iterdir()}
    metrics = json.loads((target / "metrics.json").read_text())
    assert metrics["rows"]["total"] == N and "c_index" in metrics["predictive"]


def test_cluster_range_is_chosen_on_held_out_rows_with_a_config_file(tmp_path):
    path = tmp_path / "cat.csv"
    make_table("categorical", seed=1).to_csv(path, index=False)
    config = tmp_path / "dgc.toml"
    config.write_text('[fit]\ntarget = "y"\nclusters = "2..3"\nepochs = 50\nexclude = ["pid"]\n'
                      'pretrain-epochs = 1\nbatch_size = 64\ninit = "gmm"\nlatent_dim = 4\n'
                      'encoder = [16]\n')
    out = tmp_path / "out"
    result = invoke("fit", path, "--config", config, "--epochs", 2, "--out", out)  # option wins
    assert result.exit_code == 0, result.output
    assert "Choosing K" in result.output and "explains the held-out response best" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    table = metrics["k_selection"]
    assert [r["k"] for r in table] == [2, 3]
    assert all(set(r) == {"k", "log_predictive_y", "elbo", "stability_ari"} for r in table)
    best = max(table, key=lambda r: r["log_predictive_y"])["k"]
    assert metrics["n_clusters"] == best
    assert metrics["features"]["used"] == ["a", "b", "colour", "smoker"]
    config_json = json.loads((out / "model" / "config.json").read_text())
    assert config_json["params"]["epochs"] == 2
    assert "Choosing K" in (out / "report.md").read_text()


def test_auto_task_is_announced_and_uninformative_columns_dropped(tmp_path):
    df = make_table("categorical")
    df["row_number"] = np.arange(N)
    df["site"] = "A"
    path = tmp_path / "t.feather"
    df.to_feather(path)
    result = runner.invoke(app, ["fit", str(path), "--target", "y", "-k", "2", "--out",
                                 str(tmp_path / "o"), *LOUD])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "task: categorical ('y' holds text (2 classes))" in out
    for column in ("pid", "row_number", "site"):
        assert f"not using column '{column}'" in out
    assert "model:" in out and "report.html" in out
    a = pd.read_parquet(tmp_path / "o" / "assignments.parquet")
    assert a.columns[0] == "row" and a["row"].tolist() == list(range(N))


def test_demo_writes_its_report(tmp_path):
    out = tmp_path / "demo"
    result = invoke("demo", "--out", out, "--epochs", 1, "--device", "cpu", "-q")
    assert result.exit_code == 0, result.output
    a = pd.read_parquet(out / "assignments.parquet")
    assert len(a) == 686 and {"risk", "pred_median_time"} <= set(a.columns)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "survival" and metrics["n_clusters"] == 3
    assert "p_value" in metrics["logrank"]
    assert (out / "gbsg2.csv").is_file() and (out / "report.html").is_file()


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit code 2, nothing written


def _files(d: Path):
    return {p.name: p for p in d.iterdir()}


def _setup_table(tmp_path: Path, name: str, mutate=None, task="categorical", writer=None):
    df = make_table(task)
    if mutate:
        df = mutate(df)
    path = tmp_path / name
    if writer:
        writer(df, path)
    elif name.endswith(".parquet"):
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    return path


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _col(name, values):
    def mutate(df):
        df[name] = values
        return df
    return mutate


def _dup_header(df, path):
    df.to_csv(path, index=False)
    text = path.read_text().splitlines()
    text[0] = text[0].replace(",b,", ",a,")
    path.write_text("\n".join(text) + "\n")


FIT_CASES = {
    "file missing": (lambda d: d / "nope.csv", ["--target", "y", "-k", "2"], r"nope\.csv: no such file"),
    "unreadable (a folder)": (lambda d: _folder(d / "dir.csv"), ["--target", "y", "-k", "2"], "is a folder"),
    "corrupt parquet": (lambda d: _write(d / "x.parquet", b"PAR1 garbage"), ["--target", "y", "-k", "2"], r"x\.parquet: not a readable parquet file"),
    "empty file": (lambda d: _write(d / "e.csv", b""), ["--target", "y", "-k", "2"], "the file is empty"),
    "header only": (lambda d: _write(d / "h.csv", b"a,y\n"), ["--target", "y", "-k", "2"], "has no rows"),
    "unknown extension": (lambda d: _write(d / "t.xlsx", b"a,y\n1,2\n"), ["--target", "y", "-k", "2"], "unknown table format '.xlsx'"),
    "target missing": (lambda d: _setup_table(d, "t.csv"), ["--target", "yy", "-k", "2"], r"column 'yy' not found in .*t\.csv \(did you mean 'y'\?\)"),
    "target all missing": (lambda d: _setup_table(d, "t.csv", _col("y", np.nan)), ["--target", "y", "-k", "2"], "'y' has no values"),
    "too few rows after dropping": (lambda d: _setup_table(d, "t.csv", lambda df: df.assign(y=df["y"].where(df.index < 25))), ["--target", "y", "-k", "3"], r"only 25 usable rows \(95 dropped for missing 'y'\); 3 clusters need at least 30"),
    "survival time <= 0": (lambda d: _setup_table(d, "s.csv", lambda df: df.assign(time=df["time"] - 3), "survival"), ["--time", "time", "--event", "event", "-k", "2"], "survival time column 'time' has .* not positive"),
    "survival time non-numeric": (lambda d: _setup_table(d, "s.csv", lambda df: df.assign(time=df["time"].astype(str).where(df.index != 4, "soon")), "survival"), ["--time", "time", "--event", "event", "-k", "2"], "'time' must be numeric.*'soon'"),
    "event not 0/1": (lambda d: _setup_table(d, "s.csv", lambda df: df.assign(event=df["event"] * 2), "survival"), ["--time", "time", "--event", "event", "-k", "2"], "event column 'event' must be 0/1.*holds 2"),
    "continuous on text": (lambda d: _setup_table(d, "t.csv"), ["--target", "y", "--task", "continuous", "-k", "2"], "--task continuous needs a numeric target; column 'y'"),
    "K < 1": (lambda d: _setup_table(d, "t.csv"), ["--target", "y", "-k", "0"], "--clusters must be at least 1"),
    "K > rows": (lambda d: _setup_table(d, "t.csv"), ["--target", "y", "-k", "500"], "--clusters 500 exceeds the 120 usable rows"),
    "range malformed": (lambda d: _setup_table(d, "t.csv"), ["--target", "y", "-k", "2..x"], "--clusters takes an integer or a range like 2..8, got '2..x'"),
    "range backwards": (lambda d: _setup_table(d, "t.csv"), ["--target", "y", "-k", "5..2"], "runs backwards"),
    "too few rows per cluster": (lambda d: _setup_table(d, "t.csv"), ["--target", "y", "-k", "13"], "13 clusters need at least 130"),
    "all-NaN feature": (lambda d: _setup_table(d, "t.csv", _col("b", np.nan)), ["--target", "y", "-k", "2"], "feature column 'b' has no values"),
    "infinite feature": (lambda d: _setup_table(d, "t.parquet", lambda df: df.assign(a=df["a"].where(df.index != 2, np.inf))), ["--target", "y", "-k", "2"], "feature column 'a' holds 1 infinite"),
    "duplicate columns": (lambda d: _setup_table(d, "t.csv", writer=_dup_header), ["--target", "y", "-k", "2"], "duplicate column names: 'a'"),
    "no response": (lambda d: _setup_table(d, "t.csv"), ["-k", "2"], "no response"),
    "unknown task": (lambda d: _setup_table(d, "t.csv"), ["--target", "y", "--task", "ordinal", "-k", "2"], "unknown task 'ordinal'"),
    "missing feature": (lambda d: _setup_table(d, "t.csv"), ["--target", "y", "--features", "a,colr", "-k", "2"], "feature column 'colr' not found.*did you mean 'colour'"),
}


@pytest.mark.parametrize("case", list(FIT_CASES))
def test_bad_fit_input_one_line_exit_2_nothing_written(tmp_path, case):
    make, args, message = FIT_CASES[case]
    data = make(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text("previous run")  # an earlier dgc output stays as it was
    before = set(tmp_path.iterdir())
    result = invoke("fit", data, *args, "--out", out, *LOUD)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in result.output
    assert set(tmp_path.iterdir()) == before
    assert list(_files(out)) == ["metrics.json"] and (out / "metrics.json").read_text() == "previous run"


def _edit_config(model: Path, change) -> Path:
    config = model / "model" / "config.json"
    config.write_text(change(config.read_text()))
    return model


def _corrupt(model, tmp):
    return _edit_config(model, lambda text: text[:50]), None


def _future_version(model, tmp):
    return _edit_config(model, lambda t: t.replace('"format_version": 1', '"format_version": 99')), None


def _plain_folder(model, tmp):
    (tmp / "plain").mkdir()
    return tmp / "plain", None


# case: (make(model copy, tmp) -> (MODEL_DIR, how to change DATA), message)
ASSIGN_CASES = {
    "model folder missing": (lambda m, d: (d / "nomodel", None), "does not exist"),
    "model folder corrupt": (_corrupt, "is corrupt"),
    "incompatible version": (_future_version, "has model format 99"),
    "not a dgc folder": (_plain_folder, "not a dgc model folder"),
    "data lacks features": (lambda m, d: (m, "drop features"),
                            r"model feature columns not found in .*: 'a'.*'colour'"),
    "use-response without it": (lambda m, d: (m, "drop response"),
                                "--use-response needs the response column"),
}


@pytest.mark.parametrize("case", list(ASSIGN_CASES))
def test_bad_assign_input_one_line_exit_2_nothing_written(fitted, tmp_path, case):
    path, fitted_out, df, _ = fitted["categorical"]
    model = tmp_path / "model-copy"
    shutil.copytree(fitted_out, model)
    make, message = ASSIGN_CASES[case]
    model_dir, how = make(model, tmp_path)
    data, extra = path, []
    if how == "drop features":
        data = tmp_path / "less.csv"
        df.drop(columns=["a", "colour"]).to_csv(data, index=False)
    elif how == "drop response":
        data = tmp_path / "noy.csv"
        df.drop(columns=["y"]).to_csv(data, index=False)
        extra = ["--use-response"]
    target = tmp_path / "assigned.parquet"
    target.write_text("previous")
    before = set(tmp_path.iterdir())
    result = invoke("assign", model_dir, data, "--out", target, *extra)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), result.stderr
    assert target.read_text() == "previous" and set(tmp_path.iterdir()) == before


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and re.match(r"dgc \d+\.\d+", result.output)


def _commands():
    group = typer.main.get_command(app)
    return {name: cmd for name, cmd in group.commands.items() if name != "bench"}


def test_every_command_and_option_in_help_is_documented():
    docs = DOCS.read_text()
    assert "--version" in docs
    for name, command in _commands().items():
        assert f"## `dgc {name}" in docs, name
        result = invoke(name, "--help")
        assert result.exit_code == 0
        options = {opt for p in command.params for opt in p.opts + p.secondary_opts
                   if opt.startswith("--")}
        assert options and all(o in result.output for o in options), name
        missing = sorted(o for o in options if o not in docs)
        assert not missing, f"dgc {name}: {missing} are not in docs/cli.md"


@pytest.mark.parametrize("text,message", [
    ('epoch = 3\n', r"unknown setting 'epoch' in the config file \(did you mean 'epochs'"),
    ('val_fraction = "a lot"\n', "setting 'val_fraction' in the config file must be a number"),
    ('epochs = 2.5\n', "setting 'epochs' in the config file must be a whole number"),
    ('target = \n', "not valid TOML"),
])
def test_bad_config_file(tmp_path, text, message):
    data = _setup_table(tmp_path, "t.csv")
    config = tmp_path / "c.toml"
    config.write_text(text)
    result = invoke("fit", data, "--target", "y", "-k", 2, "--config", config,
                    "--out", tmp_path / "out")
    assert result.exit_code == 2 and not (tmp_path / "out").exists()
    assert re.search(message, result.stderr), result.stderr


def test_a_class_with_one_row_trains_and_the_fit_succeeds(tmp_path):
    """Stratification needs two rows per class, so a one-row class could land in validation
    only, where no head knows it: every class keeps a training row."""
    from dgc_cli.pipeline import _split

    y = np.array(["a"] * 30 + ["b"] * 30 + ["c", "d", "d"])
    for seed in range(20):
        train, val = _split(len(y), "categorical", y, 0.2, seed)
        assert set(y[val]) <= set(y[train]) and len(np.intersect1d(train, val)) == 0
        assert len(train) + len(val) == len(y) and len(val) >= 11
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"u": rng.normal(size=len(y)), "v": rng.normal(size=len(y)), "y": y})
    df.to_csv(tmp_path / "rare.csv", index=False)
    result = invoke("fit", tmp_path / "rare.csv", "--target", "y", "-k", 2, "--epochs", 2,
                    "--out", tmp_path / "out", "--quiet")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "out" / "metrics.json").read_text())["rows"]
    assert rows["train"] + rows["validation"] == len(y)
