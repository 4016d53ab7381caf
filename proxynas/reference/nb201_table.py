"""NAS-Bench-201 results as an immutable lookup table: arch string -> benchmark metric.

NAS-Bench-201 (Dong & Yang, ICLR 2020) and its successor NATS-Bench topology
space (Dong et al., TPAMI 2021) trained every one of the 15,625 cells on
CIFAR-10, CIFAR-100 and ImageNet16-120 under a 200-epoch and a 12-epoch
schedule. proxynas uses those numbers as the reference its proxies are ranked
against, so it needs them as a fast ``(arch, metric) -> float`` table.

Two sources are read:

* the *compact CSV* (gzip or plain): columns ``index, arch_str`` and then one
  column per metric (see :data:`COMPACT_COLUMNS`); an empty cell means "not
  available". This is what :func:`export_csv` writes.
* the *official files*, through the benchmark's own packages (imported only
  when needed): ``NAS-Bench-201-v1_0-e61699.pth`` / ``NAS-Bench-201-v1_1-096897.pth``
  via ``nas-bench-201`` and the NATS-Bench topology ``NATS-tss-v1_0-3ffb9-simple``
  directory (or the single ``NATS-tss-v1_0-3ffb9.pickle.pbz2`` file) via
  ``nats_bench``.

The benchmark's integer index is not a function of the arch string (its order
was fixed by a seeded shuffle when the benchmark was built), so the table is
the only place where index <-> string is known.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import gzip
import importlib.resources
import io
import math
import os
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from proxynas.errors import ArchError, ConfigError, DataError
from proxynas.spaces.nb201 import format_arch, parse_arch

#: metric columns of the compact CSV (the one shipped in ``proxynas/reference/data``) and their meaning
COMPACT_COLUMNS: Mapping[str, str] = MappingProxyType(
    {
        "cifar10_test_200ep": "CIFAR-10 test accuracy % after 200 epochs (train+valid), mean over seeds",
        "cifar100_test_200ep": "CIFAR-100 test accuracy % after 200 epochs, mean over seeds",
        "imagenet16_test_200ep": "ImageNet16-120 test accuracy % after 200 epochs, mean over seeds",
        "cifar10valid_val_200ep_nb201v1_0": "CIFAR-10 validation accuracy % after 200 epochs (NAS-Bench-201 v1.0)",
        "cifar10_test_200ep_nb201v1_0": "CIFAR-10 test accuracy % after 200 epochs (NAS-Bench-201 v1.0)",
        "cifar10_test_12ep": "CIFAR-10 test accuracy % after the 12-epoch schedule",
        "cifar10valid_val_12ep": "CIFAR-10 validation accuracy % after 12 epochs (trained on train split)",
        "cifar100_test_12ep": "CIFAR-100 test accuracy % after 12 epochs",
        "cifar100_val_12ep": "CIFAR-100 validation accuracy % after 12 epochs",
        "imagenet16_test_12ep": "ImageNet16-120 test accuracy % after 12 epochs",
        "imagenet16_val_12ep": "ImageNet16-120 validation accuracy % after 12 epochs",
        "params_MB": "parameters in millions (C=16, N=5, CIFAR-10 head)",
    }
)

#: what an official file calls each metric: column -> (hp, dataset, eval set).
#: The set names are the benchmark's: CIFAR-10 ``ori-test`` is its test set,
#: CIFAR-100/ImageNet16-120 ``x-test``/``x-valid`` are halves of theirs.
OFFICIAL_METRICS: Mapping[str, tuple[str, str, str]] = MappingProxyType(
    {
        "cifar10_test_200ep": ("200", "cifar10", "ori-test"),
        "cifar100_test_200ep": ("200", "cifar100", "x-test"),
        "imagenet16_test_200ep": ("200", "ImageNet16-120", "x-test"),
        "cifar10valid_val_200ep": ("200", "cifar10-valid", "x-valid"),
        "cifar10_test_12ep": ("12", "cifar10", "ori-test"),
        "cifar10valid_val_12ep": ("12", "cifar10-valid", "x-valid"),
        "cifar100_test_12ep": ("12", "cifar100", "x-test"),
        "cifar100_val_12ep": ("12", "cifar100", "x-valid"),
        "imagenet16_test_12ep": ("12", "ImageNet16-120", "x-test"),
        "imagenet16_val_12ep": ("12", "ImageNet16-120", "x-valid"),
    }
)
#: ``params_MB`` is read from the 200-epoch CIFAR-10 cost record (10-class head)
PARAMS_SOURCE = ("200", "cifar10")
#: a NAS-Bench-201 v1.0 file also yields the compact CSV's ``*_nb201v1_0`` columns
V1_0_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "cifar10valid_val_200ep_nb201v1_0": "cifar10valid_val_200ep",
        "cifar10_test_200ep_nb201v1_0": "cifar10_test_200ep",
    }
)

_KEY_COLUMNS = ("index", "arch_str")

#: the compact table shipped inside the package (``proxynas/reference/data``, see its README.md)
PACKAGED_TABLE = "nb201_results.csv.gz"


def default_table_path() -> Path:
    """The compact NB201 table shipped with proxynas: all 15,625 cells, see ``data/README.md``.

    It is the table every ``path``/``table`` setting left empty refers to
    (``reference: {name: nb201_table}``, ``sample.table``). Configs keep the
    empty string rather than this absolute path, so cache keys do not depend on
    where proxynas is installed.
    """
    resource = importlib.resources.files("proxynas.reference") / "data" / PACKAGED_TABLE
    path = Path(str(resource))
    if not path.is_file():
        raise DataError(
            f"the NB201 table shipped with proxynas is missing ({path}); reinstall proxynas"
            " or point the setting at a copy of nb201_results.csv.gz"
        )
    return path


def resolve_table_path(path: str | os.PathLike | None) -> Path:
    """``path`` as a Path; an empty string or None means :func:`default_table_path`."""
    if path is None or (isinstance(path, str) and not path.strip()):
        return default_table_path()
    return Path(path)


def missing_table_error(path: str | os.PathLike, setting: str = "reference.path") -> DataError:
    return DataError(
        f"NB201 results table {path} not found; point {setting} at nb201_results.csv.gz"
        " (compact CSV) or an official NAS-Bench-201-v1_*.pth / NATS-tss-v1_0-3ffb9-simple file;"
        " see `proxynas nb201 export`"
    )


def canonical_arch(arch: str) -> str:
    """The NB201 canonical string of ``arch`` (ArchError, one line, if malformed)."""
    return format_arch(parse_arch(arch))


class NB201Table:
    """Benchmark metrics of NB201 architectures, keyed by canonical arch string.

    Immutable: built once (:meth:`from_csv`, :meth:`from_official`, or the
    constructor), then only read. Values are floats; ``NaN`` marks a value the
    source did not have (e.g. 12-epoch CIFAR-100 in NAS-Bench-201 v1.0), and
    asking for one raises :class:`DataError` rather than returning ``NaN``.
    """

    __slots__ = ("_indices", "_archs", "_columns", "_row_of_arch", "_row_of_index", "_source")

    def __init__(
        self,
        indices: Sequence[int],
        archs: Sequence[str],
        columns: Mapping[str, Sequence[float]],
        *,
        source: str = "<memory>",
    ) -> None:
        n = len(archs)
        if len(indices) != n:
            raise DataError(f"NB201 table {source}: {len(indices)} indices for {n} archs")
        if n == 0:
            raise DataError(f"NB201 table {source} has no architectures")
        canon = tuple(canonical_arch(a) for a in archs)
        idx = tuple(int(i) for i in indices)
        row_of_arch: dict[str, int] = {}
        row_of_index: dict[int, int] = {}
        for row, (i, a) in enumerate(zip(idx, canon)):
            if a in row_of_arch:
                raise DataError(f"NB201 table {source}: arch {a} appears twice (indices {idx[row_of_arch[a]]} and {i})")
            if i in row_of_index:
                raise DataError(f"NB201 table {source}: index {i} appears twice")
            row_of_arch[a] = row
            row_of_index[i] = row
        cols: dict[str, np.ndarray] = {}
        for name, values in columns.items():
            if not isinstance(name, str) or not name or name in _KEY_COLUMNS:
                raise DataError(f"NB201 table {source}: invalid metric column name {name!r}")
            arr = np.asarray(values, dtype=np.float64)
            if arr.shape != (n,):
                raise DataError(f"NB201 table {source}: column {name} has {arr.size} values for {n} archs")
            arr.setflags(write=False)
            cols[name] = arr
        if not cols:
            raise DataError(f"NB201 table {source} has no metric columns (only {', '.join(_KEY_COLUMNS)})")
        setattr_ = object.__setattr__
        setattr_(self, "_indices", idx)
        setattr_(self, "_archs", canon)
        setattr_(self, "_columns", MappingProxyType(cols))
        setattr_(self, "_row_of_arch", MappingProxyType(row_of_arch))
        setattr_(self, "_row_of_index", MappingProxyType(row_of_index))
        setattr_(self, "_source", str(source))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"NB201Table is immutable (cannot set {name})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"NB201Table is immutable (cannot delete {name})")

    # -- construction -------------------------------------------------------

    @classmethod
    def from_csv(cls, path: str | os.PathLike) -> "NB201Table":
        """Read the compact CSV (gzip-compressed or plain, detected by content)."""
        p = Path(path)
        if not p.is_file():
            raise missing_table_error(path)
        with p.open("rb") as fh:
            gz = fh.read(2) == b"\x1f\x8b"
        try:
            opener = gzip.open(p, "rt", newline="", encoding="utf-8") if gz else p.open("r", newline="", encoding="utf-8")
            with opener as fh:
                return cls._parse_csv(fh, str(p))
        except (OSError, UnicodeDecodeError, EOFError) as exc:
            raise DataError(f"NB201 results table {p} could not be read: {exc}") from None

    @classmethod
    def _parse_csv(cls, fh: Iterable[str], source: str) -> "NB201Table":
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise DataError(f"NB201 results table {source} is empty")
        header = [h.strip() for h in header]
        missing = [k for k in _KEY_COLUMNS if k not in header]
        if missing:
            raise DataError(
                f"NB201 results table {source} lacks column(s) {', '.join(missing)};"
                f" expected header index,arch_str,<metrics...>, got {','.join(header)}"
            )
        if len(set(header)) != len(header):
            raise DataError(f"NB201 results table {source} has duplicate column names in {','.join(header)}")
        i_index, i_arch = header.index("index"), header.index("arch_str")
        metric_pos = [(j, h) for j, h in enumerate(header) if h not in _KEY_COLUMNS]
        indices: list[int] = []
        archs: list[str] = []
        values: dict[str, list[float]] = {h: [] for _, h in metric_pos}
        for line_no, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise DataError(f"{source} line {line_no}: {len(row)} fields, header has {len(header)}")
            try:
                indices.append(int(row[i_index]))
            except ValueError:
                raise DataError(f"{source} line {line_no}: index {row[i_index]!r} is not an integer") from None
            archs.append(row[i_arch])
            for j, h in metric_pos:
                cell = row[j].strip()
                try:
                    values[h].append(float(cell) if cell else math.nan)
                except ValueError:
                    raise DataError(f"{source} line {line_no}: {h} value {cell!r} is not a number") from None
        try:
            return cls(indices, archs, values, source=source)
        except ArchError as exc:
            raise DataError(f"NB201 results table {source}: {exc}") from None

    @classmethod
    def from_official(cls, path: str | os.PathLike) -> "NB201Table":
        """Read an official benchmark file through its package (see module docs).

        ``*.pth`` -> NAS-Bench-201 (``pip install nas-bench-201``); a directory
        (``NATS-tss-v1_0-3ffb9-simple``) or ``*.pickle.pbz2`` -> NATS-Bench
        topology (``pip install nats_bench``). Every arch gets the columns of
        :data:`OFFICIAL_METRICS` the file has (mean over the seeds it holds) and
        ``params_MB``; a v1.0 ``.pth`` also gets the ``*_nb201v1_0`` aliases.
        Columns the file has for no arch are left out.
        """
        p = Path(path)
        if not p.exists():
            raise missing_table_error(path)
        if p.is_dir() or p.name.endswith(".pbz2"):
            api = _open_nats(p)
            aliases: Mapping[str, str] = {}
        elif p.suffix == ".pth":
            api = _open_nb201(p)
            aliases = V1_0_ALIASES if "v1_0" in p.name else {}
        else:
            raise DataError(
                f"{p} is not an official NB201 file; expected NAS-Bench-201-v1_*.pth,"
                " a NATS-tss-v1_0-3ffb9-simple directory or NATS-tss-*.pickle.pbz2"
                " (a compact CSV is read with NB201Table.from_csv)"
            )
        return _table_from_api(api, str(p), aliases)

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> "NB201Table":
        """:meth:`from_official` for ``.pth``/``.pbz2``/directories, else :meth:`from_csv`.

        An empty ``path`` is the table shipped with proxynas (:func:`default_table_path`).
        """
        p = resolve_table_path(path)
        if not p.exists():
            raise missing_table_error(path)
        if p.is_dir() or p.suffix == ".pth" or p.name.endswith(".pbz2"):
            return cls.from_official(p)
        return cls.from_csv(p)

    # -- queries ------------------------------------------------------------

    @property
    def source(self) -> str:
        """Where the table was read from (for messages)."""
        return self._source

    @property
    def columns(self) -> list[str]:
        """Metric column names, in file order."""
        return list(self._columns)

    def __len__(self) -> int:
        return len(self._archs)

    def __contains__(self, arch: object) -> bool:
        if not isinstance(arch, str):
            return False
        if arch in self._row_of_arch:
            return True
        try:
            return canonical_arch(arch) in self._row_of_arch
        except ArchError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self._archs)

    def __repr__(self) -> str:
        return f"NB201Table({len(self)} archs, columns={self.columns}, source={self._source!r})"

    def _row(self, arch: str) -> int:
        row = self._row_of_arch.get(arch) if isinstance(arch, str) else None
        if row is not None:
            return row
        canon = canonical_arch(arch)  # ArchError if malformed
        row = self._row_of_arch.get(canon)
        if row is None:
            raise ArchError(f"arch {canon} is not in the NB201 table {self._source} ({len(self)} archs)")
        return row

    def _col(self, column: str) -> np.ndarray:
        try:
            return self._columns[column]
        except (KeyError, TypeError):
            raise ConfigError(
                f"unknown NB201 table column {column!r} in {self._source}; available: {', '.join(self._columns)}"
            ) from None

    def lookup(self, arch: str, column: str) -> float:
        """The ``column`` value of ``arch`` (any well-formed spelling; canonicalised)."""
        col = self._col(column)
        row = self._row(arch)
        value = float(col[row])
        if math.isnan(value):
            raise DataError(f"NB201 table {self._source} has no {column} value for arch {self._archs[row]}")
        return value

    def values(self, archs: Iterable[str], column: str) -> list[float]:
        """:meth:`lookup` of each arch, in order."""
        return [self.lookup(a, column) for a in archs]

    def index_of(self, arch: str) -> int:
        """The benchmark's integer index of ``arch``."""
        return self._indices[self._row(arch)]

    def arch_of(self, index: int) -> str:
        """The canonical arch string with benchmark index ``index``."""
        row = self._row_of_index.get(index) if isinstance(index, int) and not isinstance(index, bool) else None
        if row is None:
            lo, hi = min(self._indices), max(self._indices)
            raise ArchError(f"no arch with NB201 index {index!r} in {self._source} (indices {lo}..{hi})")
        return self._archs[row]

    def indices(self) -> list[int]:
        """Benchmark indices in table order (aligned with :meth:`archs`)."""
        return list(self._indices)

    def archs(self) -> list[str]:
        """Canonical arch strings in table order."""
        return list(self._archs)

    def column(self, name: str) -> dict[str, float]:
        """``{arch: value}`` for every arch that has a value in column ``name``."""
        col = self._col(name)
        return {a: float(v) for a, v in zip(self._archs, col) if not math.isnan(v)}

    def array(self, name: str) -> np.ndarray:
        """Column ``name`` as a read-only array in table order (NaN = missing)."""
        return self._col(name)


# -- caching -----------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _load_cached(resolved: str, mtime_ns: int, size: int) -> NB201Table:
    return NB201Table.from_path(resolved)


def load_table(path: str | os.PathLike | None = None, *, setting: str = "reference.path") -> NB201Table:
    """:meth:`NB201Table.from_path`, cached per (resolved path, mtime, size).

    Parsing 15,625 rows takes a fraction of a second, far too slow to repeat
    for every proxy call; a changed file (new mtime/size) is re-read. An empty
    ``path`` (the default) is the table shipped with proxynas. A missing file
    is a DataError telling the user to fix ``setting``.
    """
    p = resolve_table_path(path)
    try:
        resolved = p.resolve()
        st = resolved.stat()
    except OSError:
        raise missing_table_error(path, setting) from None
    return _load_cached(str(resolved), st.st_mtime_ns, st.st_size)


def clear_cache() -> None:
    """Forget cached tables (tests; long-running processes that swap files)."""
    _load_cached.cache_clear()


# -- export ------------------------------------------------------------------


def _format_value(value: float) -> str:
    return "" if math.isnan(value) else repr(float(value))


def export_csv(table: NB201Table, out_path: str | os.PathLike) -> Path:
    """Write ``table`` in the compact CSV format (gzip when ``out_path`` ends in ``.gz``).

    Floats are written with ``repr`` so that reading the file back gives the
    identical values; missing values are empty cells. Returns the path written.
    """
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    cols = table.columns
    arrays = [table.array(c) for c in cols]
    writer.writerow([*_KEY_COLUMNS, *cols])
    for row, (index, arch) in enumerate(zip(table.indices(), table.archs())):
        writer.writerow([index, arch, *(_format_value(a[row]) for a in arrays)])
    data = buf.getvalue().encode("utf-8")
    tmp = out.with_name(out.name + ".tmp")
    if out.name.endswith(".gz"):
        with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
            gz.write(data)
    else:
        tmp.write_bytes(data)
    os.replace(tmp, out)
    return out


# -- official files ------------------------------------------------------------


@contextlib.contextmanager
def _torch_load_full() -> Iterator[None]:
    """Make ``torch.load`` default to ``weights_only=False`` inside the block.

    The benchmark packages call ``torch.load(path, map_location='cpu')``; since
    torch 2.6 that defaults to ``weights_only=True``, whose restricted
    unpickler rejects the numpy scalars stored in the benchmark files. Only
    call this on files you trust (pickles can run code).
    """
    import torch

    original = torch.load

    @functools.wraps(original)
    def load(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("weights_only", False)
        return original(*args, **kwargs)

    torch.load = load
    try:
        yield
    finally:
        torch.load = original


def _open_nb201(path: Path) -> Any:
    try:
        from nas_201_api import NASBench201API
    except ImportError:
        raise DataError(
            f"reading {path} needs the NAS-Bench-201 API: pip install nas-bench-201"
            " (or export it elsewhere with `proxynas nb201 export` and use the CSV)"
        ) from None
    try:
        with _torch_load_full():
            return NASBench201API(str(path), verbose=False)
    except Exception as exc:  # the package signals bad files with assert/ValueError/pickle errors
        raise DataError(f"{path} is not a readable NAS-Bench-201 file ({type(exc).__name__}: {exc})") from None


def _open_nats(path: Path) -> Any:
    try:
        from nats_bench import create
    except ImportError:
        raise DataError(
            f"reading {path} needs the NATS-Bench API: pip install nats_bench"
            " (or export it elsewhere with `proxynas nb201 export` and use the CSV)"
        ) from None
    try:
        with _torch_load_full():
            return create(str(path), "tss", fast_mode=path.is_dir(), verbose=False)
    except Exception as exc:
        raise DataError(f"{path} is not a readable NATS-Bench topology file ({type(exc).__name__}: {exc})") from None


def _has_eval_set(info: Any, dataset: str, setname: str) -> bool:
    if dataset not in info.get_dataset_names():
        return False
    trials = info.query(dataset)
    return bool(trials) and all(setname in trial.get_eval_set() for trial in trials.values())


def _arch_metrics(api: Any, index: int) -> dict[str, float]:
    """Every metric of :data:`OFFICIAL_METRICS` (and params) the file has for ``index``."""
    infos: dict[str, Any] = {}
    for hp in {hp for hp, _, _ in OFFICIAL_METRICS.values()}:
        try:
            infos[hp] = api.query_meta_info_by_index(index, hp)
        except ValueError:  # the packages' "no such hp / not evaluated"
            pass
    out: dict[str, float] = {}
    for column, (hp, dataset, setname) in OFFICIAL_METRICS.items():
        info = infos.get(hp)
        if info is not None and _has_eval_set(info, dataset, setname):
            out[column] = float(info.get_metrics(dataset, setname, is_random=False)["accuracy"])
    hp, dataset = PARAMS_SOURCE
    info = infos.get(hp)
    if info is not None and dataset in info.get_dataset_names():
        out["params_MB"] = float(info.get_compute_costs(dataset)["params"])
    return out


def _table_from_api(api: Any, source: str, aliases: Mapping[str, str]) -> NB201Table:
    n = len(api)
    order = [*OFFICIAL_METRICS]
    order = order[:4] + [*aliases] + order[4:] + ["params_MB"]
    columns: dict[str, list[float]] = {c: [math.nan] * n for c in order}
    archs: list[str] = []
    fast = bool(getattr(api, "fast_mode", False))
    for index in range(n):
        archs.append(api.meta_archs[index])
        try:
            metrics = _arch_metrics(api, index)
        except Exception as exc:
            raise DataError(f"{source}: cannot read the results of arch index {index} ({type(exc).__name__}: {exc})") from None
        for alias, target in aliases.items():
            if target in metrics:
                metrics[alias] = metrics[target]
        for column, value in metrics.items():
            columns[column][index] = value
        if fast:  # fast mode caches each loaded arch; drop it to keep memory flat
            api.arch2infos_dict.pop(index, None)
    kept = {c: v for c, v in columns.items() if not all(math.isnan(x) for x in v)}
    if not kept:
        raise DataError(f"{source} holds no results for any architecture")
    try:
        return NB201Table(range(n), archs, kept, source=source)
    except ArchError as exc:
        raise DataError(f"{source}: {exc}") from None
