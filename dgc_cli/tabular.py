"""Tables in, a float matrix out: reading, column choice, task inference, validation, preprocessing.

Everything a user can get wrong about a table ends here as an `InputError` with one line that
names the file or the column; the command line prints that line and exits with code 2.

The fitted `TablePreprocessor` is saved as plain JSON statistics (medians, means, scales,
category lists) and its `transform` runs on those statistics alone, so a saved model never needs
pickle and a loaded preprocessor transforms exactly like the one that was fitted.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

TASKS = ("categorical", "continuous", "survival")
MIN_ROWS_PER_CLUSTER = 10
# Integer targets with at most this many distinct values are read as classes.
MAX_CLASS_LEVELS = 10
_COMPRESSED = (".gz", ".bz2", ".xz", ".zip", ".zst")
_FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet",
            ".feather": "feather", ".arrow": "feather"}


class InputError(Exception):
    """A mistake in the user's input, told in one line (the CLI exits with code 2)."""


# ---------------------------------------------------------------------------------------------
# Reading


def table_format(path: str | os.PathLike) -> str:
    """Return "csv", "tsv", "parquet" or "feather" from the file name, or raise InputError."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if len(suffixes) >= 2 and suffixes[-1] in _COMPRESSED and suffixes[-2] in (".csv", ".tsv"):
        return _FORMATS[suffixes[-2]]
    if suffixes and suffixes[-1] in _FORMATS:
        return _FORMATS[suffixes[-1]]
    raise InputError(f"{path}: unknown table format '{''.join(suffixes) or '(no extension)'}'; "
                     "use .csv, .tsv, .parquet or .feather")


def _check_file(path: str | os.PathLike) -> None:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file")
    if p.is_dir():
        raise InputError(f"{path}: is a folder, not a table file")
    if not os.access(p, os.R_OK):
        raise InputError(f"{path}: cannot be read (permission denied)")
    if p.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def table_columns(path: str | os.PathLike) -> list[str]:
    """Column names of a table file, read from its header or schema only."""
    _check_file(path)
    fmt = table_format(path)
    try:
        if fmt in ("csv", "tsv"):
            head = pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", header=None, nrows=1,
                               dtype=str, keep_default_na=False)
            return [str(v) for v in head.iloc[0].tolist()]
        import pyarrow as pa
        if fmt == "parquet":
            import pyarrow.parquet as pq
            return list(pq.read_schema(path).names)
        try:
            with pa.ipc.open_file(path) as reader:
                return list(reader.schema.names)
        except pa.ArrowInvalid:
            import pyarrow.feather as feather
            return list(feather.read_table(path).schema.names)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: the file is empty") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text table (cannot decode it as UTF-8)") from None
    except Exception as exc:  # pyarrow and the csv parser raise many types for a bad file
        raise InputError(f"{path}: not a readable {fmt} file ({_first_line(exc)})") from None


def suggest(name: str, choices: Sequence[str]) -> str:
    """' (did you mean 'x'?)' for the closest names, or ''."""
    close = difflib.get_close_matches(name, [str(c) for c in choices], n=3, cutoff=0.5)
    if not close:
        lowered = {str(c).lower(): str(c) for c in choices}
        close = [lowered[name.lower()]] if name.lower() in lowered else []
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def require_columns(available: Sequence[str], wanted: Sequence[str], source: str,
                    what: str = "column") -> None:
    """Raise InputError naming every wanted column that `available` lacks, with suggestions."""
    missing = [c for c in wanted if c not in set(available)]
    if not missing:
        return
    if len(missing) == 1:
        raise InputError(f"{what} '{missing[0]}' not found in {source}"
                         f"{suggest(missing[0], available)}")
    raise InputError(f"{what}s not found in {source}: "
                     + ", ".join(f"'{c}'{suggest(c, available)}" for c in missing))


def _check_duplicates(names: Sequence[str], source: str) -> None:
    seen, dup = set(), []
    for n in names:
        if n in seen and n not in dup:
            dup.append(n)
        seen.add(n)
    if dup:
        raise InputError(f"{source}: duplicate column names: {', '.join(repr(d) for d in dup)}")


def _prepare(path, columns: Sequence[str] | None) -> tuple[str, list[str] | None]:
    """Check a table file's header before reading it: (format, requested columns, deduplicated)."""
    names = table_columns(path)
    _check_duplicates(names, str(path))
    if columns is None:
        return table_format(path), None
    require_columns(names, columns, str(path))
    return table_format(path), list(dict.fromkeys(columns))


def _arrow_to_pandas(table) -> pd.DataFrame:
    """Convert with as little extra memory as pyarrow allows: each column is freed once
    converted (``self_destruct``; the table must not be touched afterwards), one pandas block
    per column (no consolidation copy), one column at a time."""
    df = table.to_pandas(self_destruct=True, split_blocks=True, use_threads=False)
    release_memory()
    return df


def release_memory() -> None:
    """Hand Arrow's freed buffers back to the OS. A table read from Parquet keeps its columns
    in Arrow's memory pool, which holds on to them after pandas lets them go."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def read_table(path: str | os.PathLike, columns: Sequence[str] | None = None,
               text_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Read a .csv/.tsv/.parquet/.feather table, only `columns` when given.

    `text_columns` are read as strings from CSV (categorical codes that look like numbers).
    Raises InputError for a missing, unreadable, corrupt or empty file, an unknown extension,
    duplicate column names, or a requested column the file lacks.
    """
    fmt, columns = _prepare(path, columns)
    try:
        if fmt in ("csv", "tsv"):
            df = pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", usecols=columns,
                             dtype={c: str for c in text_columns} or None)
        elif fmt == "parquet":
            import pyarrow.parquet as pq
            df = _arrow_to_pandas(pq.read_table(path, columns=columns, pre_buffer=False))
        else:
            import pyarrow.feather as feather
            df = _arrow_to_pandas(feather.read_table(path, columns=columns))
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: not a readable {fmt} file ({_first_line(exc)})") from None
    if columns is not None and list(df.columns) != list(columns):
        df = df[columns]  # CSV readers keep the file's order; reorder (this copies)
    if len(df) == 0:
        raise InputError(f"{path}: the table has no rows")
    return df


@contextlib.contextmanager
def table_stream(path: str | os.PathLike):
    """Write a table batch by batch, all or nothing: yields ``write(batch)`` for pandas
    DataFrames or pyarrow Tables. Parquet, or CSV when ``path`` ends in .csv; Parquet batches
    are cast to the first one's schema. The file appears under ``path`` only when the block
    ends without an error, and a half-written temporary never stays behind."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    as_csv = path.suffix.lower() == ".csv"
    writer, started = None, False

    def write(batch) -> None:
        nonlocal writer, started
        if as_csv:
            frame = batch.to_pandas() if isinstance(batch, pa.Table) else batch
            frame.to_csv(tmp, mode="a", header=not started, index=False)
        else:
            table = pa.Table.from_pandas(batch, preserve_index=False) \
                if isinstance(batch, pd.DataFrame) else batch
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table.cast(writer.schema, safe=False))
        started = True

    try:
        yield write
        if writer is not None:
            writer.close()
            writer = None
        if started:
            os.replace(tmp, path)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)


def iter_table(path: str | os.PathLike, columns: Sequence[str], batch_rows: int = 65536,
               text_columns: Sequence[str] = ()) -> Iterator[pd.DataFrame]:
    """Yield `columns` of a table in batches of at most about `batch_rows` rows, in file order.

    Parquet is streamed with `ParquetFile.iter_batches` and CSV with a chunked reader, so memory
    stays bounded by the batch size. Raises InputError like `read_table`.
    """
    fmt, columns = _prepare(path, columns)
    try:
        if fmt in ("csv", "tsv"):
            reader = pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", usecols=columns,
                                 chunksize=batch_rows,
                                 dtype={c: str for c in text_columns} or None)
            batches = (chunk[columns] for chunk in reader)
        elif fmt == "parquet":
            import pyarrow.parquet as pq
            pf = pq.ParquetFile(path, pre_buffer=False)  # pre-buffering holds whole row groups
            batches = (b.to_pandas() for b in pf.iter_batches(batch_size=batch_rows,
                                                              columns=columns))
        else:
            import pyarrow as pa
            import pyarrow.feather as feather
            try:
                reader = pa.ipc.open_file(path)
                batches = (reader.get_batch(i).select(columns).to_pandas()
                           for i in range(reader.num_record_batches))
            except pa.ArrowInvalid:  # Feather v1 has no record batches: read it whole
                batches = iter([feather.read_table(path, columns=columns).to_pandas()])
        empty = True
        for batch in batches:
            empty = empty and len(batch) == 0
            if len(batch):
                yield batch
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: not a readable {fmt} file ({_first_line(exc)})") from None
    if empty:
        raise InputError(f"{path}: the table has no rows")


# ---------------------------------------------------------------------------------------------
# Column selection


def split_names(values: str | Sequence[str] | None) -> list[str]:
    """Names from comma-separated strings and/or a repeated option, in order, without repeats."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    names = [n.strip() for v in values for n in str(v).split(",")]
    return list(dict.fromkeys(n for n in names if n))


def response_columns(target: str | None = None, time: str | None = None,
                     event: str | None = None) -> list[str]:
    """The response column(s): [target] or [time, event]; raise InputError on a bad mix."""
    if target and (time or event):
        raise InputError("give either --target (categorical/continuous) or --time with --event "
                         "(survival), not both")
    if target:
        return [target]
    if time and event:
        if time == event:
            raise InputError(f"--time and --event name the same column '{time}'")
        return [time, event]
    if time or event:
        raise InputError("survival needs both --time COL and --event COL")
    raise InputError("no response: give --target COL, or --time COL --event COL for survival")


@dataclass
class ColumnPlan:
    """Which columns of a table play which role."""

    response: list[str]
    id: str | None
    features: list[str]
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (column, why)

    @property
    def needed(self) -> list[str]:
        return list(dict.fromkeys(([self.id] if self.id else []) + self.response + self.features))


def plan_columns(names: Sequence[str], *, response: Sequence[str], id_col: str | None = None,
                 features: Sequence[str] = (), exclude: Sequence[str] = (),
                 source: str = "the data") -> ColumnPlan:
    """Choose feature columns by name: `features` if given, else all others, minus `exclude`."""
    _check_duplicates(names, source)
    require_columns(names, list(response), source)
    if id_col:
        require_columns(names, [id_col], source, what="id column")
    require_columns(names, list(features), source, what="feature column")
    require_columns(names, list(exclude), source, what="excluded column")
    roles = set(response) | ({id_col} if id_col else set())
    clash = [f for f in features if f in roles]
    if clash:
        raise InputError(f"column '{clash[0]}' is the response or the id and cannot be a feature")
    chosen = list(features) if features else [n for n in names if n not in roles]
    chosen = [c for c in chosen if c not in set(exclude)]
    if not chosen:
        raise InputError(f"no feature columns left in {source}")
    return ColumnPlan(list(response), id_col, chosen)


def _is_id_like(s: pd.Series) -> bool:
    """Every value unique, and either text or consecutive integers. The cheap tests come first:
    a float column is never ID-like, and integers must span exactly their count."""
    if pd.api.types.is_bool_dtype(s) or (pd.api.types.is_numeric_dtype(s)
                                         and not pd.api.types.is_integer_dtype(s)):
        return False
    values = s.dropna()
    if len(values) < 2:
        return False
    if pd.api.types.is_integer_dtype(values):
        span = int(values.max()) - int(values.min()) == len(values) - 1
        return span and values.nunique() == len(values)
    return values.nunique() == len(values)


def _is_constant(s: pd.Series) -> bool:
    """At most one distinct value, missing counted as one (nunique(dropna=False) <= 1), from
    min and max where the column is numeric: no hash table of a million floats."""
    if not isinstance(s.dtype, np.dtype) or s.dtype.kind not in "iuf":  # text, bool, nullable
        return s.nunique(dropna=False) <= 1
    v = s.to_numpy()
    if v.dtype.kind == "f" and np.isnan(v).any():
        return bool(np.isnan(v).all())
    return len(v) == 0 or bool(v.min() == v.max())


def check_features(df: pd.DataFrame, features: Sequence[str]) -> None:
    """Raise InputError for a feature column that is entirely missing or holds infinities."""
    for c in features:
        s = df[c]
        if s.isna().all():
            raise InputError(f"feature column '{c}' has no values (all missing); "
                             f"leave it out with --exclude {c}")
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            n_inf = int(np.isinf(s.to_numpy(dtype=float, na_value=np.nan)).sum())
            if n_inf:
                raise InputError(f"feature column '{c}' holds {n_inf} infinite value(s); "
                                 "replace them or leave the column out with --exclude")


def drop_uninformative(df: pd.DataFrame, features: Sequence[str]
                       ) -> tuple[list[str], list[tuple[str, str]]]:
    """Split features into (kept, dropped) where dropped are constant, ID-like or date columns.

    Raises InputError when nothing usable is left.
    """
    kept, dropped = [], []
    for c in features:
        s = df[c]
        if pd.api.types.is_datetime64_any_dtype(s) or pd.api.types.is_timedelta64_dtype(s):
            dropped.append((c, "date/time column (convert it to a number to use it)"))
        elif _is_constant(s):
            dropped.append((c, "constant"))
        elif _is_id_like(s):
            dropped.append((c, "ID-like (every value unique)"))
        else:
            kept.append(c)
    if not kept:
        raise InputError("no usable feature columns: "
                         + ", ".join(f"'{c}' is {why}" for c, why in dropped))
    return kept, dropped


# ---------------------------------------------------------------------------------------------
# Task inference and response validation


def _integral(values: pd.Series) -> bool:
    v = values.to_numpy(dtype=float)
    return bool(np.all(np.isfinite(v)) and np.all(v == np.round(v)))


def infer_task(df: pd.DataFrame, target: str | None = None, time: str | None = None,
               event: str | None = None) -> tuple[str, str]:
    """Guess the task from the response column(s); return (task, a sentence saying why)."""
    if time or event:
        response_columns(target, time, event)
        return "survival", f"--time '{time}' and --event '{event}' were given"
    if not target:
        response_columns(target, time, event)
    s = df[target].dropna()
    if len(s) == 0:
        raise InputError(f"target column '{target}' has no values (all missing)")
    levels = s.nunique()
    if pd.api.types.is_bool_dtype(s):
        return "categorical", f"'{target}' is boolean"
    if not pd.api.types.is_numeric_dtype(s):
        return "categorical", f"'{target}' holds text ({levels} classes)"
    if _integral(s) and levels <= MAX_CLASS_LEVELS:
        return "categorical", (f"'{target}' holds {levels} distinct whole numbers "
                               f"(at most {MAX_CLASS_LEVELS} are read as classes)")
    kind = "whole numbers" if _integral(s) else "decimal numbers"
    return "continuous", f"'{target}' holds {kind} with {levels} distinct values"


def _numeric(s: pd.Series, what: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(s):
        return s.astype(float)
    out = pd.to_numeric(s, errors="coerce")
    bad = s[out.isna() & s.notna()]
    if len(bad):
        raise InputError(f"{what} must be numeric, but holds text such as {str(bad.iloc[0])!r}")
    return out.astype(float)


def validate_response(df: pd.DataFrame, task: str, response: Sequence[str],
                      fitting: bool = True) -> tuple[pd.DataFrame, int]:
    """Check the response column(s) for `task`; drop rows where it is missing.

    Returns (rows kept, number dropped); the kept frame keeps the original index. Survival time
    and event come back as floats, a continuous target as float. With `fitting` (the default)
    a response that is all missing, has a single class or no events is an error too; without
    it (new rows for an existing model) only the values themselves are checked.
    """
    if task not in TASKS:
        raise InputError(f"unknown task '{task}'; use one of {', '.join(TASKS)}")
    for c in response:
        if fitting and df[c].isna().all():
            raise InputError(f"{'target' if task != 'survival' else 'response'} column '{c}' "
                             "has no values (all missing)")
    keep = df[list(response)].notna().all(axis=1)
    # a shallow copy when every row is kept: converted response columns replace the copy's
    # columns and never write into the caller's frame (tested), and no feature is copied
    out = df.copy(deep=False) if keep.all() else df.loc[keep].copy()
    n_dropped = int((~keep).sum())
    if task == "continuous":
        (c,) = response
        out[c] = _numeric(out[c], f"--task continuous needs a numeric target; column '{c}'")
        if np.isinf(out[c]).any():
            raise InputError(f"target column '{c}' holds infinite values")
    elif task == "categorical":
        (c,) = response
        if fitting and out[c].nunique() < 2:
            raise InputError(f"target column '{c}' has a single class "
                             f"({out[c].iloc[0]!r}); there is nothing to predict")
    else:
        time, event = response
        t = _numeric(out[time], f"survival time column '{time}'")
        bad = t[(t <= 0) | ~np.isfinite(t)]
        if len(bad):
            raise InputError(f"survival time column '{time}' has {len(bad)} value(s) that are "
                             f"not positive, such as {bad.iloc[0]:g}; times must be > 0")
        e = _numeric(out[event], f"event column '{event}' (1 = event, 0 = censored)")
        odd = sorted(set(e.unique()) - {0.0, 1.0})
        if odd:
            raise InputError(f"event column '{event}' must be 0/1 (1 = event, 0 = censored), "
                             f"but holds {', '.join(f'{v:g}' for v in odd[:3])}")
        if fitting and e.sum() == 0:
            raise InputError(f"event column '{event}' has no events (every row is censored)")
        out[time], out[event] = t, e
    return out, n_dropped


def check_enough_rows(n_rows: int, n_clusters: int, n_dropped: int = 0,
                      response: str = "the response") -> None:
    """Raise InputError unless there are at least MIN_ROWS_PER_CLUSTER rows per cluster."""
    need = MIN_ROWS_PER_CLUSTER * n_clusters
    if n_rows < need:
        why = f" ({n_dropped} dropped for missing {response})" if n_dropped else ""
        raise InputError(f"only {n_rows} usable rows{why}; {n_clusters} clusters need at least "
                         f"{need} ({MIN_ROWS_PER_CLUSTER} per cluster)")


def class_labels(s: pd.Series) -> np.ndarray:
    """Class labels in one canonical form, so that a model's classes match on any re-read table:
    booleans stay booleans, whole numbers become integers (7.0 and 7 agree), anything else text.
    """
    values = s.dropna()
    if pd.api.types.is_bool_dtype(s) or (len(values) and values.map(type).isin([bool]).all()):
        return s.astype(bool).to_numpy()
    if pd.api.types.is_numeric_dtype(s):
        return s.to_numpy(dtype=np.int64) if _integral(s) else s.to_numpy(dtype=float)
    return _as_text(s).astype(str)


def response_array(df: pd.DataFrame, task: str, response: Sequence[str]) -> np.ndarray:
    """The response in the form the estimator takes (labels, floats, or [time, event] rows)."""
    if task == "survival":
        return df[list(response)].to_numpy(dtype=float)
    if task == "continuous":
        return df[response[0]].to_numpy(dtype=float)
    return class_labels(df[response[0]])


# ---------------------------------------------------------------------------------------------
# Preprocessing


def _column_kind(s: pd.Series) -> str:
    """"binary" (bool or 0/1), "numeric", or "categorical"."""
    if pd.api.types.is_bool_dtype(s):
        return "binary"
    values = s.dropna()
    if pd.api.types.is_numeric_dtype(s):  # vectorised: no Python call per value
        v = values.to_numpy()
        zero, one = v == 0, v == 1
        return "binary" if (zero | one).all() and zero.any() and one.any() else "numeric"
    if len(values) and values.map(type).isin([bool]).all():  # Python bools in an object column
        return "binary"
    return "categorical"


def _as_text(s: pd.Series) -> np.ndarray:
    """Category values as strings (whole floats as integers, so 7.0 and 7 agree), NaN missing."""
    def text(v):
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v)
    out = np.full(len(s), np.nan, dtype=object)
    mask = s.notna().to_numpy()
    out[mask] = [text(v) for v in s.to_numpy(dtype=object)[mask]]
    return out


_BINARY = {True: 1.0, False: 0.0, "True": 1.0, "False": 0.0, "true": 1.0, "false": 0.0,
           "1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0}


def _as_binary(s: pd.Series, name: str) -> np.ndarray:
    values = s.map(lambda v: _BINARY.get(v, np.nan) if pd.notna(v) else np.nan)
    bad = s[values.isna() & s.notna()]
    if len(bad):
        raise InputError(f"column '{name}' was 0/1 when the model was fitted but holds "
                         f"{str(bad.iloc[0])!r}")
    return values.to_numpy(dtype=float)


def _as_float(s: pd.Series, name: str) -> np.ndarray:
    x = _numeric(s, f"column '{name}' (numeric when the model was fitted)").to_numpy(dtype=float, copy=True)
    if np.isinf(x).any():
        raise InputError(f"column '{name}' holds infinite values")
    return x


class _RowView:
    """The columns of a frame restricted to some rows, sliced one column at a time."""

    def __init__(self, df: pd.DataFrame, rows: np.ndarray):
        self._df, self._rows = df, rows

    def __getitem__(self, column: str) -> pd.Series:
        return self._df[column].iloc[self._rows]


class TablePreprocessor:
    """Impute, standardise and one-hot encode a table's feature columns.

    Numeric columns: median imputation, then standardisation. 0/1 and boolean columns: most
    frequent value, kept as 0/1. Text columns: most frequent value, then one-hot; a category not
    seen at fit time gives an all-zero group. Every column that had missing values at fit time
    gains a 0/1 missing-indicator column. Output columns are ordered numeric, binary, indicators,
    one-hot groups, so `likelihood_blocks()` is a short list.

    Numeric statistics are taken one column at a time (numpy's nanmedian, mean and population
    standard deviation, as StandardScaler); binary and text columns use scikit-learn's
    SimpleImputer and OneHotEncoder. The fitted statistics live in a JSON-ready dict
    (`to_dict`), and `transform` works from that dict alone, writing each column straight into
    one float32 matrix.
    """

    def __init__(self):
        self.state_: dict | None = None

    def fit(self, df: pd.DataFrame, columns: Sequence[str] | None = None,
            rows: np.ndarray | None = None) -> TablePreprocessor:
        """Learn the statistics from `columns` of `df`, on the positional `rows` only when
        given (each column is sliced on its own, so the table is never copied whole)."""
        from sklearn.impute import SimpleImputer
        from sklearn.preprocessing import OneHotEncoder

        columns = list(df.columns if columns is None else columns)
        if rows is not None:
            df = _RowView(df, rows)
        check_features(df, columns)
        kinds = {c: _column_kind(df[c]) for c in columns}
        num = [c for c in columns if kinds[c] == "numeric"]
        binary = [c for c in columns if kinds[c] == "binary"]
        cat = [c for c in columns if kinds[c] == "categorical"]
        state = {"format": 1, "columns": columns,
                 "missing_indicators": [c for c in columns if df[c].isna().any()],
                 "numeric": {"columns": num, "medians": [], "means": [], "scales": []},
                 "binary": {"columns": binary, "fill": []},
                 "categorical": {"columns": cat, "fill": [], "categories": []}}
        for c in num:  # one column at a time: memory stays near one column, not the table
            x = _as_float(df[c], c)
            median = float(np.nanmedian(x))
            x[np.isnan(x)] = median
            scale = float(x.std())
            state["numeric"]["medians"].append(median)
            state["numeric"]["means"].append(float(x.mean()))
            state["numeric"]["scales"].append(scale if scale > 0 else 1.0)
        if binary:
            x = np.column_stack([_as_binary(df[c], c) for c in binary])
            imputer = SimpleImputer(strategy="most_frequent").fit(x)
            state["binary"]["fill"] = imputer.statistics_.tolist()
        if cat:
            x = np.column_stack([_as_text(df[c]) for c in cat])
            imputer = SimpleImputer(strategy="most_frequent", missing_values=np.nan).fit(x)
            encoder = OneHotEncoder(handle_unknown="ignore").fit(imputer.transform(x))
            state["categorical"]["fill"] = [str(v) for v in imputer.statistics_]
            # A single level is constant once imputed: its missing indicator says all there is.
            state["categorical"]["categories"] = [
                [str(v) for v in cats] if len(cats) > 1 else [] for cats in encoder.categories_]
        self.state_ = state
        return self

    def _state(self) -> dict:
        if self.state_ is None:
            raise RuntimeError("TablePreprocessor is not fitted")
        return self.state_

    @property
    def input_columns(self) -> list[str]:
        return list(self._state()["columns"])

    @property
    def text_columns(self) -> list[str]:
        """Columns read as text (category codes), to keep their codes intact when re-read."""
        return list(self._state()["categorical"]["columns"])

    def transform(self, df: pd.DataFrame, rows: np.ndarray | None = None,
                  consume: bool = False) -> np.ndarray:
        """The (n, d) float32 matrix for `df`, which must hold every fitted input column; with
        positional `rows`, for those rows in that order (sliced one column at a time, so the
        frame is never copied whole). With `consume`, each input column is deleted from `df`
        once it has been written, so that the table and the matrix are never both held whole
        (``dgc fit`` on a table it read itself)."""
        st = self._state()
        require_columns(list(df.columns), st["columns"], "the data", what="feature column")
        n = len(df) if rows is None else len(rows)
        frame, df = df, (df if rows is None else _RowView(df, rows))
        num, cat = st["numeric"], st["categorical"]
        uses = dict.fromkeys(st["columns"], 0)  # the column reads still to come
        for c in num["columns"] + st["binary"]["columns"] + st["missing_indicators"]:
            uses[c] += 1
        for c, cats in zip(cat["columns"], cat["categories"], strict=True):
            uses[c] += bool(cats)

        def used(c: str) -> None:
            uses[c] -= 1
            if consume and uses[c] == 0:
                del frame[c]
                release_memory()

        out = np.zeros((n, len(self.feature_names_out)), dtype=np.float32)
        j = 0
        for c, med, mean, scale in zip(num["columns"], num["medians"], num["means"],
                                       num["scales"], strict=True):
            x = _as_float(df[c], c)
            x[np.isnan(x)] = med
            out[:, j] = (x - mean) / scale
            used(c)
            j += 1
        for c, fill in zip(st["binary"]["columns"], st["binary"]["fill"], strict=True):
            x = _as_binary(df[c], c)
            out[:, j] = np.where(np.isnan(x), fill, x)
            used(c)
            j += 1
        for c in st["missing_indicators"]:
            out[:, j] = df[c].isna().to_numpy()
            used(c)
            j += 1
        for c, fill, cats in zip(cat["columns"], cat["fill"], cat["categories"], strict=True):
            if not cats:
                continue
            text = _as_text(df[c])
            text[pd.isna(text)] = fill
            codes = pd.Categorical(text, categories=cats).codes  # -1 for an unseen category
            seen = np.flatnonzero(codes >= 0)
            out[seen, j + codes[seen]] = 1.0
            used(c)
            j += len(cats)
        if consume:  # and the columns never read (a single-level text column without gaps)
            frame.drop(columns=[c for c in uses if c in frame], inplace=True)
            release_memory()
        return out

    def fit_transform(self, df: pd.DataFrame, columns: Sequence[str] | None = None) -> np.ndarray:
        return self.fit(df, columns).transform(df)

    @property
    def feature_names_out(self) -> list[str]:
        st = self._state()
        names = list(st["numeric"]["columns"]) + list(st["binary"]["columns"])
        names += [f"{c}__missing" for c in st["missing_indicators"]]
        cat = st["categorical"]
        for c, cats in zip(cat["columns"], cat["categories"], strict=True):
            names += [f"{c}={v}" for v in cats]
        return names

    def likelihood_blocks(self) -> list[tuple[str, int]]:
        """Reconstruction likelihood per column block, in column order: (kind, width)."""
        st = self._state()
        blocks = []
        if st["numeric"]["columns"]:
            blocks.append(("gaussian", len(st["numeric"]["columns"])))
        n_bernoulli = len(st["binary"]["columns"]) + len(st["missing_indicators"])
        if n_bernoulli:
            blocks.append(("bernoulli", n_bernoulli))
        blocks += [("categorical", len(cats)) for cats in st["categorical"]["categories"] if cats]
        return blocks

    def to_dict(self) -> dict:
        """The fitted statistics as a JSON-serialisable dict."""
        import copy
        return copy.deepcopy(self._state())

    @classmethod
    def from_dict(cls, state: dict) -> TablePreprocessor:
        if not isinstance(state, dict) or state.get("format") != 1:
            raise ValueError("not a saved TablePreprocessor (format 1)")
        pre = cls()
        pre.state_ = state
        return pre
