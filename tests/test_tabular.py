"""Reading tables, choosing columns, inferring the task, and the JSON-saved preprocessor."""

import json

import numpy as np
import pandas as pd
import pytest

from dgc_cli.tabular import (
    InputError,
    TablePreprocessor,
    check_enough_rows,
    check_features,
    drop_uninformative,
    infer_task,
    iter_table,
    plan_columns,
    read_table,
    response_columns,
    split_names,
    validate_response,
)


@pytest.fixture
def frame():
    rng = np.random.default_rng(0)
    n = 60
    df = pd.DataFrame({
        "age": rng.normal(50, 10, n),
        "dose": rng.integers(0, 100, n).astype(float),
        "smoker": rng.integers(0, 2, n),
        "flag": rng.choice([True, False], n),
        "colour": rng.choice(["red", "green", "blue"], n),
        "y": rng.normal(size=n),
    })
    df.loc[[2, 7], "age"] = np.nan
    df.loc[[4], "colour"] = None
    return df


def test_round_trip_through_json_gives_identical_transform(frame):
    pre = TablePreprocessor().fit(frame, ["age", "dose", "smoker", "flag", "colour"])
    loaded = TablePreprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    np.testing.assert_array_equal(pre.transform(frame), loaded.transform(frame))
    assert loaded.feature_names_out == pre.feature_names_out
    assert loaded.likelihood_blocks() == pre.likelihood_blocks()


def test_numpy_transform_matches_sklearn(frame):
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    before = frame.copy()
    pre = TablePreprocessor().fit(frame, ["age", "dose"])
    x = frame[["age", "dose"]].to_numpy()
    expected = StandardScaler().fit_transform(SimpleImputer(strategy="median").fit_transform(x))
    np.testing.assert_allclose(pre.transform(frame)[:, :2], expected, rtol=1e-5, atol=1e-6)
    pd.testing.assert_frame_equal(frame, before)  # imputing never writes into the caller's table


def test_missing_values_are_imputed_with_an_indicator(frame):
    pre = TablePreprocessor().fit(frame, ["age", "colour", "dose"])
    x = pre.transform(frame)
    names = pre.feature_names_out
    assert not np.isnan(x).any()
    assert "age__missing" in names and "colour__missing" in names
    assert "dose__missing" not in names
    ind = x[:, names.index("age__missing")]
    assert ind[[2, 7]].tolist() == [1.0, 1.0] and ind.sum() == 2
    # the median, standardised, fills the gap
    age = x[:, names.index("age")]
    median = np.nanmedian(frame["age"])
    mean, sd = frame["age"].fillna(median).mean(), frame["age"].fillna(median).std(ddof=0)
    assert age[2] == pytest.approx((median - mean) / sd, abs=1e-5)
    # the most frequent colour fills the missing one: its group still sums to 1
    group = [i for i, n in enumerate(names) if n.startswith("colour=")]
    assert x[4, group].sum() == 1.0


def test_unseen_category_gives_zeros_in_its_group(frame):
    pre = TablePreprocessor().fit(frame, ["age", "colour"])
    new = frame.head(3).copy()
    new["colour"] = ["purple", "red", "blue"]
    x = pre.transform(new)
    group = [i for i, n in enumerate(pre.feature_names_out) if n.startswith("colour=")]
    assert x[0, group].tolist() == [0.0, 0.0, 0.0]
    assert x[1:, group].sum(axis=1).tolist() == [1.0, 1.0]


def test_blocks_cover_the_matrix_in_column_order(frame):
    pre = TablePreprocessor().fit(frame, ["age", "dose", "smoker", "flag", "colour"])
    x = pre.transform(frame)
    blocks = pre.likelihood_blocks()
    assert sum(w for _, w in blocks) == x.shape[1] == len(pre.feature_names_out)
    assert blocks == [("gaussian", 2), ("bernoulli", 4), ("categorical", 3)]
    # bernoulli columns are 0/1, categorical groups are one-hot
    start = 2
    assert set(np.unique(x[:, start:start + 4])) <= {0.0, 1.0}
    assert np.all(x[:, 6:9].sum(axis=1) == 1.0)


def test_transform_names_missing_columns(frame):
    pre = TablePreprocessor().fit(frame, ["age", "colour"])
    with pytest.raises(InputError, match="'colour'"):
        pre.transform(frame.drop(columns="colour"))


def test_transform_rejects_text_in_a_numeric_column(frame):
    pre = TablePreprocessor().fit(frame, ["age"])
    bad = frame.head(2).astype({"age": object})
    bad.loc[0, "age"] = "old"
    with pytest.raises(InputError, match="'age'.*'old'"):
        pre.transform(bad)


def test_categories_that_look_like_numbers_survive_reading(tmp_path):
    df = pd.DataFrame({"code": ["01", "2", "x", "2"] * 5, "v": np.arange(20.0)})
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    pre = TablePreprocessor().fit(df, ["code", "v"])
    again = read_table(path, text_columns=pre.text_columns)
    np.testing.assert_array_equal(pre.transform(df), pre.transform(again))


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".feather"])
def test_read_every_format_and_only_the_needed_columns(tmp_path, frame, suffix):
    path = tmp_path / f"t{suffix}"
    {".csv": lambda p: frame.to_csv(p, index=False),
     ".tsv": lambda p: frame.to_csv(p, sep="\t", index=False),
     ".parquet": lambda p: frame.to_parquet(p, index=False),
     ".feather": lambda p: frame.to_feather(p)}[suffix](path)
    df = read_table(path, columns=["y", "age"])
    assert list(df.columns) == ["y", "age"] and len(df) == len(frame)
    np.testing.assert_allclose(df["y"], frame["y"])
    batches = list(iter_table(path, ["colour", "y"], batch_rows=25))
    assert sum(len(b) for b in batches) == len(frame)
    np.testing.assert_allclose(pd.concat(batches)["y"], frame["y"])


def _write(path, text=None, data=None):
    if data is not None:
        path.write_bytes(data)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("make,match", [
    (lambda d: d / "nope.csv", "nope.csv: no such file"),
    (lambda d: _write(d / "empty.csv", ""), "empty.csv: the file is empty"),
    (lambda d: _write(d / "header.csv", "a,b\n"), "header.csv: the table has no rows"),
    (lambda d: _write(d / "t.xlsx", "a,b\n1,2\n"), "t.xlsx: unknown table format"),
    (lambda d: _write(d / "bad.parquet", "not parquet at all"), "bad.parquet: not a readable"),
    (lambda d: _write(d / "dup.csv", "a,b,a\n1,2,3\n"), "dup.csv: duplicate column names: 'a'"),
    (lambda d: _write(d / "bin.csv", data=b"\xff\xfe\x00a,\x9f\n"), "bin.csv: not a"),
    (lambda d: d, "is a folder"),
])
def test_read_errors_name_the_file(tmp_path, make, match):
    with pytest.raises(InputError, match=match):
        read_table(make(tmp_path))


def test_missing_column_suggests_close_names(tmp_path, frame):
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    with pytest.raises(InputError, match=r"column 'ag' not found in .*t.parquet \(did you mean 'age'"):
        read_table(path, columns=["ag"])
    with pytest.raises(InputError, match=r"feature column 'colr'.*did you mean 'colour'"):
        plan_columns(list(frame.columns), response=["y"], features=["colr"])


def test_plan_columns_defaults_features_and_excludes():
    plan = plan_columns(["id", "a", "b", "c", "y"], response=["y"], id_col="id",
                        exclude=split_names(["b", " c ,"]))
    assert plan.features == ["a"] and plan.needed == ["id", "y", "a"]
    with pytest.raises(InputError, match="'y' is the response"):
        plan_columns(["a", "y"], response=["y"], features=["a", "y"])
    with pytest.raises(InputError, match="no feature columns"):
        plan_columns(["a", "y"], response=["y"], exclude=["a"])


@pytest.mark.parametrize("kwargs,match", [
    ({}, "no response"),
    ({"time": "t"}, "both --time"),
    ({"target": "y", "time": "t", "event": "e"}, "not both"),
])
def test_response_columns_combinations(kwargs, match):
    with pytest.raises(InputError, match=match):
        response_columns(**kwargs)


def test_constant_and_id_like_columns_are_dropped_with_reasons():
    n = 30
    df = pd.DataFrame({"row": np.arange(1, n + 1), "name": [f"p{i}" for i in range(n)],
                       "k": 3.0, "x": np.linspace(0, 1, n), "g": ["a", "b"] * 15,
                       "when": pd.date_range("2020-01-01", periods=n)})
    kept, dropped = drop_uninformative(df, list(df.columns))
    assert kept == ["x", "g"]
    reasons = dict(dropped)
    assert reasons["row"].startswith("ID-like") and reasons["name"].startswith("ID-like")
    assert reasons["k"] == "constant" and "date" in reasons["when"]
    with pytest.raises(InputError, match="'k' is constant"):
        drop_uninformative(df, ["k"])


def test_feature_checks_name_the_column():
    df = pd.DataFrame({"x": [1.0, np.inf, 2.0], "gone": [np.nan] * 3})
    with pytest.raises(InputError, match="'x' holds 1 infinite"):
        check_features(df, ["x"])
    with pytest.raises(InputError, match="'gone' has no values"):
        check_features(df, ["gone"])


def test_infer_task():
    df = pd.DataFrame({"s": list("abcab") * 4, "b": [True, False] * 10, "i": [0, 1, 2, 3] * 5,
                       "f": np.linspace(0, 1, 20), "many": np.arange(20) * 3})
    df.loc[0, "i"] = None  # a missing value turns the column into floats; still classes
    assert infer_task(df, "s")[0] == "categorical"
    assert infer_task(df, "b")[0] == "categorical"
    task, why = infer_task(df, "i")
    assert task == "categorical" and "4 distinct whole numbers" in why
    assert infer_task(df, "f")[0] == "continuous"
    assert infer_task(df, "many")[0] == "continuous"
    assert infer_task(df, time="f", event="b")[0] == "survival"


def test_validate_response_drops_missing_rows_and_converts():
    df = pd.DataFrame({"t": [1.0, 2.0, None, 4.0], "e": [1, 0, 1, True], "y": ["1", "2", "3", None]})
    out, dropped = validate_response(df, "survival", ["t", "e"])
    assert dropped == 1 and out.index.tolist() == [0, 1, 3]
    assert out["e"].tolist() == [1.0, 0.0, 1.0]
    out, dropped = validate_response(df, "continuous", ["y"])
    assert dropped == 1 and out["y"].tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("task,cols,frame,match", [
    ("categorical", ["y"], {"y": [None, None]}, "'y' has no values"),
    ("categorical", ["y"], {"y": ["a", "a", None]}, "'y' has a single class"),
    ("continuous", ["y"], {"y": ["1.5", "high"]}, "--task continuous needs a numeric target; column 'y'.*'high'"),
    ("continuous", ["y"], {"y": [1.0, np.inf]}, "'y' holds infinite"),
    ("survival", ["t", "e"], {"t": [1.0, 0.0], "e": [1, 1]}, "time column 't' has 1 value.*not positive"),
    ("survival", ["t", "e"], {"t": [1.0, -2.0], "e": [1, 1]}, "such as -2"),
    ("survival", ["t", "e"], {"t": ["soon", 2], "e": [1, 1]}, "time column 't' must be numeric.*'soon'"),
    ("survival", ["t", "e"], {"t": [1.0, 2.0], "e": [1, 2]}, "event column 'e' must be 0/1.*holds 2"),
    ("survival", ["t", "e"], {"t": [1.0, 2.0], "e": [0, 0]}, "'e' has no events"),
])
def test_validate_response_errors(task, cols, frame, match):
    with pytest.raises(InputError, match=match):
        validate_response(pd.DataFrame(frame), task, cols)


def test_too_few_rows_per_cluster():
    check_enough_rows(30, 3)
    with pytest.raises(InputError, match=r"only 29 usable rows \(4 dropped for missing 'y'\); 3 clusters need at least 30"):
        check_enough_rows(29, 3, 4, "'y'")


def test_fit_on_rows_equals_fit_on_the_row_subset(frame):
    rows = np.arange(0, 60, 2)
    columns = ["age", "dose", "smoker", "flag", "colour"]
    on_rows = TablePreprocessor().fit(frame, columns, rows=rows)
    on_subset = TablePreprocessor().fit(frame.iloc[rows], columns)
    assert on_rows.to_dict() == on_subset.to_dict()


def test_consuming_transform_gives_the_same_matrix_and_lets_the_features_go(frame):
    """dgc fit's transform deletes each feature column once written (so the table and x are
    never both held whole); the matrix is the same, other columns stay."""
    columns = ["age", "dose", "smoker", "flag", "colour"]
    frame["single"] = "only"  # a single-level text column, never read by transform
    pre = TablePreprocessor().fit(frame, columns + ["single"])
    order = np.random.default_rng(1).permutation(len(frame))
    expected = pre.transform(frame, rows=order)
    owned = frame.copy()
    x = pre.transform(owned, rows=order, consume=True)
    np.testing.assert_array_equal(x, expected)
    assert list(owned.columns) == ["y"]
    pd.testing.assert_series_equal(owned["y"], frame["y"])


def test_validating_every_row_never_writes_into_the_callers_frame():
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": ["1.5", "2", "3.25"]})
    before = df.copy()
    rows, dropped = validate_response(df, "continuous", ["y"])
    assert dropped == 0 and rows["y"].dtype == float
    pd.testing.assert_frame_equal(df, before)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_table_stream_writes_all_batches_or_nothing(tmp_path, suffix):
    from dgc_cli.tabular import table_stream

    path = tmp_path / f"out{suffix}"
    batches = [pd.DataFrame({"a": [1, 2], "b": [0.5, 1.5]}), pd.DataFrame({"a": [3], "b": [2.5]})]
    with table_stream(path) as write:
        for batch in batches:
            write(batch)
    back = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
    pd.testing.assert_frame_equal(back, pd.concat(batches, ignore_index=True), check_dtype=False)

    failed = tmp_path / f"failed{suffix}"
    with pytest.raises(RuntimeError), table_stream(failed) as write:
        write(batches[0])
        raise RuntimeError("interrupted")
    assert not failed.exists() and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.parametrize("n, chunk", [(1, 4), (10, 3), (5000, 97), (5000, 65536)])
def test_to_table_order_restores_the_rows_in_place(n, chunk):
    """dgc fit builds x with its training rows first; to_table_order puts every row back at
    its table position without a second whole-matrix copy."""
    from dgc_cli.pipeline import to_table_order

    rng = np.random.default_rng(n)
    table = rng.normal(size=(n, 3)).astype(np.float32)
    train = np.sort(rng.choice(n, int(0.8 * n), replace=False))
    rest = rng.permutation(np.setdiff1d(np.arange(n), train))
    order = np.concatenate([train, rest])
    x = table[order]
    restored = to_table_order(x, order, len(train), chunk=chunk)
    assert restored is x  # in place
    np.testing.assert_array_equal(restored, table)


@pytest.mark.parametrize("values, dtype", [
    ([1.0, 1.0, 1.0], None), ([1.0, np.nan], None), ([np.nan, np.nan], None), ([0.0, -0.0], None),
    ([np.inf, np.inf], None), ([1, 2, 3], None), ([7, 7], "uint8"), ([1, 2, None], "Int64"),
    (["a", "a"], None), (["x", None], None), ([True, True], None), ([True, False], None),
    ([], "float64")])
def test_constant_check_agrees_with_nunique(values, dtype):
    """drop_uninformative's constant test reads min and max of numeric columns (no hash of a
    million floats); it must agree with nunique(dropna=False) <= 1 on every kind of column."""
    from dgc_cli.tabular import _is_constant

    s = pd.Series(values, dtype=dtype)
    assert _is_constant(s) == (s.nunique(dropna=False) <= 1)
