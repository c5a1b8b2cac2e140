"""Windows that survive a restart: the window store in a file, in numpy's own format.

    capture(store)    on the writer thread: flush, then copy what the file needs (the only pause)
    write_file(...)   anywhere (a worker thread): np.savez to a temp file, fsync, rename, fsync the directory
    read_file(path)   np.load with allow_pickle=False: a file can hold arrays and text, never code
    restore(store)    on a fresh store, before any event: rows, keys, runs and counters back in place

What is saved is the store's state itself, not a summary: the rows of the largest window (42
bytes per event), the interned keys and run ids, each window's running counters (bit for bit,
so sums come back with the same rounding), the since-start counters and reservoir, and the
sampling state. The sorted duration samples and the windows.index_by entries are rebuilt from
the rows (they are functions of them). After a clean restart the store is what it was; events
older than the longest window leave it at the first flush, as they would have.

A file written by the periodic save (not at shutdown) may be missing the events that arrived
after it: the store then marks every window that covers the load time inexact (`exact: false`)
until that time has left it.

Anything wrong with a file (missing, truncated, corrupt, written by something else, another
format version, other windows.durations, arrays that do not agree) raises SnapshotError with a
reason and a message; the caller logs it and starts empty.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from sidecar.sinks.window.sorted_values import SortedValues
from sidecar.sinks.window.store import COLUMNS, WindowStore
from sidecar.sinks.window.view import COUNTER_FIELDS, DIMENSIONS, sampled
from sidecar.types import SEVERITIES

# The order of a key's fields in Keys._add's combination (not DIMENSIONS' order).
COMBO_DIMENSIONS = ("type", "agent", "workflow", "model", "tool")
assert set(COMBO_DIMENSIONS) == set(DIMENSIONS), "a new window dimension: add it to COMBO_DIMENSIONS and a key's combination"

MAGIC = "agent-sidecar window snapshot"
CHECKSUMS = "checksums"  # an entry of its own, written last: CRC-32 of every other entry
VERSION = 1

Arrays = dict[str, npt.NDArray[Any]]


@dataclass(frozen=True)
class Restored:
    """What a restore put back: the events now in the largest window, and whether the file was
    written at shutdown (complete) or by a periodic save (events after it may be missing)."""

    events: int
    complete: bool


class SnapshotError(Exception):
    """A snapshot file that cannot be restored. `reason` labels the counter; the text says why."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# -- strings as arrays (no pickle): UTF-8 bytes, end offsets, and which entries are None ----------


def _pack_strings(values: list[str | None]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    encoded = [(v or "").encode("utf-8", "surrogatepass") for v in values]
    blob = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
    ends = np.cumsum([len(e) for e in encoded], dtype=np.int64)
    return blob, ends, np.array([v is None for v in values], dtype=bool)


def _unpack_strings(arrays: Arrays, name: str) -> list[str | None]:
    blob, ends, none = (arrays[f"{name}.blob"], arrays[f"{name}.ends"], arrays[f"{name}.none"])
    if blob.dtype != np.uint8 or ends.dtype != np.int64 or none.dtype != np.bool_ or len(ends) != len(none):
        raise SnapshotError("inconsistent", f"{name}: string table of the wrong types or lengths")
    if len(ends) and (ends[-1] != len(blob) or np.any(np.diff(ends) < 0) or ends[0] < 0):
        raise SnapshotError("inconsistent", f"{name}: string offsets do not fit the bytes")
    raw = blob.tobytes()
    out: list[str | None] = []
    start = 0
    for end, is_none in zip(ends.tolist(), none.tolist()):
        out.append(None if is_none else raw[start:end].decode("utf-8", "surrogatepass"))
        start = end
    return out


def _put_strings(out: Arrays, name: str, values: list[str | None]) -> None:
    out[f"{name}.blob"], out[f"{name}.ends"], out[f"{name}.none"] = _pack_strings(values)


# -- saving -------------------------------------------------------------------------------------


def capture(store: WindowStore, now: float, final: bool, copy: bool = True) -> Arrays:
    """Everything the file needs, on the writer thread. copy=True: as copies, to be written while
    the store goes on changing; copy=False: views, for a forked child whose store never changes."""

    def own(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return a.copy() if copy else a

    store.flush(now)
    n_keys = len(store.keys)
    keys = store.keys
    out: Arrays = {f"rows.{c}": own(a[store.head : store.tail]) for c, a in store.cols.items()}
    for d in DIMENSIONS:
        _put_strings(out, f"keys.names.{d}", list(keys.names[d]))
        out[f"keys.of.{d}"] = own(keys.of[d][:n_keys])
    out["keys.severity"] = own(keys.severity[:n_keys])
    out["keys.failed"] = own(keys.failed[:n_keys])
    _put_strings(out, "runs.names", list(store.run_names))
    for i, w in enumerate(store.windows):
        out[f"windows.{i}.counters"] = w.counters.copy(n_keys)
    out["total.counters"] = store.total.copy(n_keys)
    n = store._res_n
    out["reservoir.dur"] = own(store._res_dur[:n])
    out["reservoir.key"] = own(store._res_key[:n])
    meta = {
        "magic": MAGIC,
        "version": VERSION,
        "saved_at": now,
        "final": final,
        "durations": [w.seconds for w in store.windows],
        "cutoffs": [w.cutoff if math.isfinite(w.cutoff) else None for w in store.windows],
        "truncated": [w.truncated for w in store.windows],
        "level": store.level,
        "late": store.late,
        "runs_seen": store.runs_seen,
        "started": store.started,
        "seen_durations": store._seen_durations,
        "overflowed": keys.overflowed,
        "rng": store._rng.bit_generator.state,
    }
    out["meta"] = np.array(json.dumps(meta))
    return out


def _checksums(arrays: Arrays) -> dict[str, int]:
    # np.load does not always read a member to its end, where zipfile checks the CRC: a flipped
    # byte inside an array would be restored as a wrong number. Our own sums are checked on read.
    return {name: zlib.crc32(np.ascontiguousarray(a).data) for name, a in sorted(arrays.items()) if name != CHECKSUMS}


def write_file(path: str, arrays: Arrays) -> int:
    """Write atomically: a reader (or the next start) sees the old file or the new one, whole.
    Returns the file's size in bytes. Raises OSError (the caller logs it and keeps the old file)."""
    directory = os.path.dirname(path) or "."
    tmp = f"{path}.tmp-{os.getpid()}"
    sums = np.array(json.dumps(_checksums(arrays)))
    try:
        with open(tmp, "wb") as f:
            np.savez(f, allow_pickle=False, **arrays, **{CHECKSUMS: sums})
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a power cut
    finally:
        os.close(fd)
    return size


def fork_writer(store: WindowStore, now: float, path: str) -> tuple[int, int]:
    """Write the store as it is now from a forked child, which sees a copy-on-write copy of this
    process's memory: the pause here is a flush and the fork (milliseconds at millions of
    events), not a copy of the rows. Returns (the child's pid, a pipe to read its verdict from);
    `reap_writer` waits for it. The child writes and exits, touching nothing else."""
    store.flush(now)
    r, w = os.pipe()
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns that a child of a threaded process may deadlock on a lock another
            # thread held: this child takes none (no logging; its modules are imported already),
            # it writes numpy arrays and leaves with os._exit.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        raise
    if pid == 0:  # pragma: no cover - the child (coverage does not follow it)
        code = 1
        try:
            gc.disable()  # a collection would touch every object: copies of pages for nothing
            os.close(r)
            size = write_file(path, capture(store, now, final=False, copy=False))
            os.write(w, f"ok {size}".encode())
            code = 0
        except BaseException as exc:
            with contextlib.suppress(BaseException):
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
                os.write(w, reason.encode(errors="replace")[:4096])
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def reap_writer(pid: int, fd: int) -> int:
    """Wait for a `fork_writer` child (blocks: call it from a worker thread). Returns the file's
    size; raises OSError with the child's reason when it could not write the file."""
    with os.fdopen(fd, "rb") as verdict:
        text = verdict.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 0 and text.startswith("ok "):
        return int(text[3:])
    raise OSError(text or f"the writer process ended with status {os.waitstatus_to_exitcode(status)}")


# -- loading ------------------------------------------------------------------------------------


def read_file(path: str) -> Arrays:
    """Every array of a snapshot file, checked to be ours and of this version.
    FileNotFoundError when there is none; SnapshotError for anything else wrong."""
    try:
        with open(path, "rb") as f:  # ours to close, whatever np.load makes of the bytes
            loaded = np.load(f, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise SnapshotError("foreign", "not a window snapshot (a single .npy array, not an .npz archive)")
            with loaded as z:
                if "meta" not in z.files:
                    raise SnapshotError("foreign", "not a window snapshot (an .npz archive without its meta entry)")
                arrays = {name: z[name] for name in z.files}
    except FileNotFoundError:
        raise
    except SnapshotError:
        raise
    except Exception as exc:  # np.load and zipfile raise many kinds for a damaged file
        reason = "corrupt" if isinstance(exc, zipfile.BadZipFile) and "CRC" in str(exc) else "unreadable"
        raise SnapshotError(reason, f"not a readable .npz file ({type(exc).__name__}: {exc})") from None
    if CHECKSUMS in arrays:
        _verify(arrays)
    elif _meta(arrays).get("magic") == MAGIC:
        raise SnapshotError("corrupt", "the file has no checksums")
    meta = _meta(arrays)
    if meta.get("magic") != MAGIC:
        raise SnapshotError("foreign", "not a window snapshot (another program's .npz file)")
    if meta.get("version") != VERSION:
        raise SnapshotError("version", f"format version {meta.get('version')!r}, this sidecar reads version {VERSION}")
    return arrays


def _verify(arrays: Arrays) -> None:
    """Every entry as it was written (the checksums entry is removed from `arrays`)."""
    raw = arrays.pop(CHECKSUMS)
    try:
        expected = json.loads(str(raw[()])) if raw.dtype.kind == "U" and raw.shape == () else None
    except json.JSONDecodeError:
        expected = None
    if not isinstance(expected, dict):
        raise SnapshotError("corrupt", "the file's checksums are unreadable")
    actual = _checksums(arrays)
    if expected != actual:
        bad = sorted(name for name in set(expected) | set(actual) if expected.get(name) != actual.get(name))
        raise SnapshotError("corrupt", f"checksum mismatch in {', '.join(bad[:5])}: the file was damaged after it was written")


def _meta(arrays: Arrays) -> dict[str, Any]:
    raw = arrays["meta"]
    if raw.dtype.kind != "U" or raw.shape != ():
        raise SnapshotError("foreign", "not a window snapshot (meta is not text)")
    try:
        meta = json.loads(str(raw[()]))
    except json.JSONDecodeError as exc:
        raise SnapshotError("foreign", f"not a window snapshot (meta is not JSON: {exc})") from None
    if not isinstance(meta, dict):
        raise SnapshotError("foreign", "not a window snapshot (meta is not an object)")
    return meta


def _array(arrays: Arrays, name: str, dtype: Any, length: int | None = None, shape: tuple[int, ...] | None = None) -> npt.NDArray[Any]:
    a = arrays.get(name)
    if a is None:
        raise SnapshotError("inconsistent", f"{name}: missing")
    if a.dtype != np.dtype(dtype):
        raise SnapshotError("inconsistent", f"{name}: dtype {a.dtype}, expected {np.dtype(dtype)}")
    if length is not None and a.shape != (length,):
        raise SnapshotError("inconsistent", f"{name}: shape {a.shape}, expected ({length},)")
    if shape is not None and a.shape != shape:
        raise SnapshotError("inconsistent", f"{name}: shape {a.shape}, expected {shape}")
    return a


def restore(store: WindowStore, arrays: Arrays, now: float) -> Restored:
    """Put a snapshot into `store`, which must be new (no event consumed yet). Raises
    SnapshotError (then start from a new store: this one may be half filled)."""
    meta = _meta(arrays)
    try:
        return _restore(store, arrays, meta, now)
    except SnapshotError:
        raise
    except Exception as exc:  # a field of the wrong kind, found deep inside: still a refused file, not a crash
        raise SnapshotError("inconsistent", f"the file's contents do not agree ({type(exc).__name__}: {exc})") from None


def _restore(store: WindowStore, arrays: Arrays, meta: dict[str, Any], now: float) -> Restored:
    durations = [float(s) for s in meta["durations"]]
    configured = [w.seconds for w in store.windows]
    if durations != configured:
        raise SnapshotError(
            "config", f"written for windows.durations {durations}, configured now {configured}: the windows cannot be carried over"
        )
    # Keys, in their original order: interning them again gives every key and name its old index.
    severity = _array(arrays, "keys.severity", np.int8)
    n_keys = len(severity)
    failed = _array(arrays, "keys.failed", np.bool_, n_keys)
    names = {d: _unpack_strings(arrays, f"keys.names.{d}") for d in DIMENSIONS}
    of = {d: _array(arrays, f"keys.of.{d}", np.int32, n_keys) for d in DIMENSIONS}
    for d in DIMENSIONS:
        if n_keys and (of[d].min() < 0 or of[d].max() >= len(names[d])):
            raise SnapshotError("inconsistent", f"keys.of.{d}: an index outside its {len(names[d])} names")
    if n_keys and (severity.min() < 0 or severity.max() >= len(SEVERITIES)):
        raise SnapshotError("inconsistent", "keys.severity: not a severity")
    keys = store.keys
    columns = [[names[d][i] for i in of[d].tolist()] for d in COMBO_DIMENSIONS]
    for k, (type_, agent, workflow, model, tool, sev, fail) in enumerate(zip(*columns, severity.tolist(), failed.tolist())):
        if type_ is None:
            raise SnapshotError("inconsistent", f"key {k} has no type")
        keys._add((type_, agent, workflow, model, tool, SEVERITIES[sev], not fail))
        if len(keys) != k + 1:
            raise SnapshotError("inconsistent", f"key {k} repeats an earlier one")
    for d in DIMENSIONS:
        if keys.names[d] != names[d]:
            raise SnapshotError("inconsistent", f"keys.names.{d}: names that no key uses")
    keys.overflowed = int(meta["overflowed"])

    # Run ids: slot i of run_names is run id i (None: a free slot).
    run_names = _unpack_strings(arrays, "runs.names")
    store.run_names = run_names
    store.run_ids = {None: -1}
    store._free_runs = []
    for rid, name in enumerate(run_names):
        if name is None:
            store._free_runs.append(rid)
        else:
            store.run_ids[name] = rid
    store._run_hashes.add_new([n for n in run_names if n is not None])  # run ids still in the windows
    size = len(store.largest.runs)
    while size <= len(run_names):
        size *= 2
    for w in store.windows:
        w.runs = np.zeros(size, dtype=np.int32)

    # Rows.
    n = len(_array(arrays, "rows.ts", np.float64))
    rows = {c: _array(arrays, f"rows.{c}", t, n) for c, t in COLUMNS.items()}
    ts = rows["ts"]
    if n and (np.isnan(ts).any() or np.any(np.diff(ts) < 0)):
        raise SnapshotError("inconsistent", "rows.ts: not sorted by time")
    if n and int(rows["key"].max()) >= n_keys:
        raise SnapshotError("inconsistent", "rows.key: a key that is not in the key table")
    if n and (int(rows["run"].min()) < -1 or int(rows["run"].max()) >= len(run_names)):
        raise SnapshotError("inconsistent", "rows.run: a run id that is not in the run table")
    store.cols = {c: a.copy() for c, a in rows.items()}
    store.head, store.tail = 0, n
    level = int(meta["level"])
    if not 0 <= level < 64:
        raise SnapshotError("inconsistent", f"sampling level {level}")
    store.level = level

    # Windows: counters as they were (bit for bit); samples, runs and index entries from the rows.
    cutoffs, truncated = meta["cutoffs"], meta["truncated"]
    for i, w in enumerate(store.windows):
        table = _array(arrays, f"windows.{i}.counters", np.float64, shape=(n_keys, len(COUNTER_FIELDS)))
        w.cutoff = -math.inf if cutoffs[i] is None else float(cutoffs[i])
        w.truncated = bool(truncated[i])
        start = int(np.searchsorted(ts, w.cutoff, "left"))
        if int(table[:, 0].sum()) != n - start:
            raise SnapshotError("inconsistent", f"window {w.name}: its counters count {int(table[:, 0].sum())} events, its rows {n - start}")
        w.counters.table = table.copy()
        mine = {c: a[start:] for c, a in store.cols.items()}
        w.count_runs(mine["run"], 1)
        keep = sampled(mine["ts"], mine["dur"], level)
        w.values = SortedValues(mine["dur"][keep])
        if w.index:
            store._apply_index(w, mine, keep, 1, runs=True)

    # Since start.
    store.total.table = _array(arrays, "total.counters", np.float64, shape=(n_keys, len(COUNTER_FIELDS))).copy()
    res_dur = _array(arrays, "reservoir.dur", np.float64)
    res_key = _array(arrays, "reservoir.key", np.uint16, len(res_dur))
    room = min(len(res_dur), len(store._res_dur))  # cumulative_samples may have shrunk: keep what fits
    store._res_dur[:room] = res_dur[:room]
    store._res_key[:room] = res_key[:room]
    store._res_n = room
    store._seen_durations = int(meta["seen_durations"])
    store._rng.bit_generator.state = meta["rng"]
    store.late = int(meta["late"])
    store.runs_seen = int(meta["runs_seen"])
    store.started = float(meta["started"])
    complete = bool(meta["final"])
    if not complete:
        store.gap_until = now  # what came after the save and before the crash is missing
    store.flush(now, fold=True)  # events older than the longest window leave now
    return Restored(store.tail - store.head, complete)
