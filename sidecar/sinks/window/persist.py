"""Windows that survive a restart: the window store in a file, in numpy's own format.

    capture(store)    on the writer thread: flush, then copy what the file needs, at once (shutdown)
    SlicedCopy(store) the same copy while serving: in slices, one per event-loop turn, consistent
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

import json
import math
import os
import zipfile
import zlib
from collections.abc import Mapping
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
Parts = list[npt.NDArray[Any]]  # one entry of the file as consecutive pieces (rows copied in slices)
Strings = dict[str, list[str | None]]  # string tables before they are packed into arrays


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


def capture(store: WindowStore, now: float, final: bool) -> Arrays:
    """Everything the file needs, as copies, in one go (on the writer thread, with nothing to
    interleave: the shutdown save after the drain, and tests). While serving, `SlicedCopy`."""
    store.flush(now)
    out: Arrays = {f"rows.{c}": a[store.head : store.tail].copy() for c, a in store.cols.items()}
    state, strings = _state(store, now, final)
    out.update(state)
    for name, values in strings.items():
        _put_strings(out, name, values)
    return out


def _state(store: WindowStore, now: float, final: bool) -> tuple[Arrays, Strings]:
    """Everything but the rows, as copies: O(keys + run ids + reservoir), not O(events). The
    string tables are lists (of immutable strings) to be packed into arrays later, off the loop:
    encoding 100k run ids takes longer than copying them."""
    n_keys = len(store.keys)
    keys = store.keys
    out: Arrays = {}
    for d in DIMENSIONS:
        out[f"keys.of.{d}"] = keys.of[d][:n_keys].copy()
    out["keys.severity"] = keys.severity[:n_keys].copy()
    out["keys.failed"] = keys.failed[:n_keys].copy()
    for i, w in enumerate(store.windows):
        out[f"windows.{i}.counters"] = w.counters.copy(n_keys)
    out["total.counters"] = store.total.copy(n_keys)
    n = store._res_n
    out["reservoir.dur"] = store._res_dur[:n].copy()
    out["reservoir.key"] = store._res_key[:n].copy()
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
    strings: Strings = {f"keys.names.{d}": list(keys.names[d]) for d in DIMENSIONS}
    strings["runs.names"] = list(store.run_names)
    return out, strings


SLICE_ROWS = 32_768  # rows per slice of a SlicedCopy: ~1.4 MB over the 8 columns, well under a millisecond
MAX_ROUNDS = 4  # catch-up rounds before the last turn copies whatever is left at once


@dataclass
class _Round:
    """One pass over the row numbers [lo, hi): the slices copied, each (first row number, columns)."""

    lo: int
    hi: int
    slices: list[tuple[int, dict[str, npt.NDArray[Any]]]]


class SlicedCopy:
    """A copy of the store made in slices, one per event-loop turn, that ends as the store was at
    the last turn (`finish`): consistent, though events keep arriving between the slices.

    Rows are numbered `position + store.shifted`, which stays a row's number while it is stored
    (appends go after the tail; evictions move the head; a compaction or growth moves rows to
    the front and adds to `shifted`). The one change in place is an out-of-order insert, which
    rewrites every row from where the oldest new event sorts; the store records the lowest row
    number so rewritten in `rewritten_from`. A round copies [lo, hi) slice by slice; the next
    round starts from the lowest row rewritten meanwhile (or the old end) and runs to the new
    tail. `finish` flushes, copies what is left since the last round and everything but the rows
    (counters, keys, run ids: O(keys), not O(events)), all in one turn. A row is then taken from
    the last round that copied it, and no row was rewritten after that round copied it.

        copy = SlicedCopy(store)
        while copy.step():         # one slice per call, with the loop's other work between them
            await asyncio.sleep(0)
        captured = copy.finish(now, final=False)
        write_file(path, captured.entries())   # in a worker thread
    """

    def __init__(self, store: WindowStore, slice_rows: int = SLICE_ROWS, max_rounds: int = MAX_ROUNDS):
        self.store = store
        self.slice_rows = slice_rows
        self.max_rounds = max_rounds
        store.rewritten_from = math.inf
        self.rounds = [_Round(store.head + store.shifted, store.tail + store.shifted, [])]
        self.next = self.rounds[0].lo  # the next row number to copy in the current round

    def step(self) -> bool:
        """Copy one slice. False when what is left is for `finish` (at most about one slice, or
        the rounds are used up)."""
        store = self.store
        current = self.rounds[-1]
        self.next = max(self.next, store.head + store.shifted)  # rows evicted meanwhile are not needed
        if self.next < current.hi:
            hi = min(self.next + self.slice_rows, current.hi)
            lo_pos, hi_pos = self.next - store.shifted, hi - store.shifted
            current.slices.append((self.next, {c: a[lo_pos:hi_pos].copy() for c, a in store.cols.items()}))
            self.next = hi
            return True
        tail = store.tail + store.shifted
        lo = int(min(store.rewritten_from, current.hi))
        if tail - lo <= self.slice_rows or len(self.rounds) >= self.max_rounds:
            return False
        store.rewritten_from = math.inf
        self.rounds.append(_Round(lo, tail, []))
        self.next = lo
        return self.step()

    def finish(self, now: float, final: bool) -> Captured:
        """The last turn: flush, then copy the rows changed or added since the last round and
        the rest of the state. The store may change again as soon as this returns."""
        store = self.store
        store.flush(now)
        head, tail = store.head + store.shifted, store.tail + store.shifted
        lo = max(int(min(store.rewritten_from, self.rounds[-1].hi)), head)
        rows = {c: a.copy() for c, a in store._rows(lo - store.shifted, tail - store.shifted).items()}
        return Captured(head, [*self.rounds, _Round(lo, tail, [(lo, rows)])], *_state(store, now, final))


@dataclass
class Captured:
    """What a SlicedCopy took: rows from `head` on, in rounds, and the rest of the state."""

    head: int
    rounds: list[_Round]
    state: Arrays
    strings: Strings

    def entries(self) -> dict[str, npt.NDArray[Any] | Parts]:
        """The file's entries for `write_file` (anywhere: a worker thread), the rows as the copied
        pieces themselves. Each row comes from the last round that copied it: round r gives
        [its lo, the lowest lo of the rounds after it)."""
        pieces: list[dict[str, npt.NDArray[Any]]] = []
        end = self.rounds[-1].hi
        ranges = []
        for r in reversed(self.rounds):
            ranges.append((r, max(r.lo, self.head), end))
            end = min(end, r.lo)
        for r, lo, hi in reversed(ranges):
            for first, cols in r.slices:
                a, b = max(lo, first), min(hi, first + len(cols["ts"]))
                if a < b:
                    pieces.append({c: col[a - first : b - first] for c, col in cols.items()})
        out: dict[str, npt.NDArray[Any] | Parts] = {
            f"rows.{c}": [p[c] for p in pieces] if pieces else np.empty(0, dtype=t) for c, t in COLUMNS.items()
        }
        out.update(self.state)
        for name, values in self.strings.items():
            out[f"{name}.blob"], out[f"{name}.ends"], out[f"{name}.none"] = _pack_strings(values)
        return out


WRITE_CHUNK = 1 << 20  # bytes per write: zlib.crc32 and the write itself release the GIL, the loop runs meanwhile


def _parts(value: npt.NDArray[Any] | Parts) -> Parts:
    return value if isinstance(value, list) else [value]


def _bytes(a: npt.NDArray[Any]) -> memoryview:
    """An array's bytes in C order (no copy unless it is not contiguous)."""
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8).data


def _checksums(entries: dict[str, Parts]) -> dict[str, int]:
    # np.load does not always read a member to its end, where zipfile checks the CRC: a flipped
    # byte inside an array would be restored as a wrong number. Our own sums are checked on read.
    sums = {}
    for name, parts in sorted(entries.items()):
        if name != CHECKSUMS:
            crc = 0
            for part in parts:
                crc = zlib.crc32(_bytes(part), crc)
            sums[name] = crc
    return sums


def write_file(path: str, arrays: Mapping[str, npt.NDArray[Any] | Parts]) -> int:
    """Write atomically: a reader (or the next start) sees the old file or the new one, whole.
    An entry may be a list of pieces (each a copied slice of the rows), written one after the
    other as one array. Returns the file's size in bytes. Raises OSError (the caller logs it
    and keeps the old file)."""
    directory = os.path.dirname(path) or "."
    tmp = f"{path}.tmp-{os.getpid()}"
    entries = {name: _parts(value) for name, value in arrays.items()}
    entries[CHECKSUMS] = [np.array(json.dumps(_checksums(entries)))]
    try:
        with open(tmp, "wb") as f:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
                for name, parts in entries.items():
                    _write_entry(z, name, parts)
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


def _write_entry(z: zipfile.ZipFile, name: str, parts: Parts) -> None:
    """One `name.npy` member, as np.savez writes it, from the pieces' own memory: np.savez copies
    each array into bytes (holding the GIL, which the event loop then waits for); this does not."""
    first = parts[0]
    if first.dtype.hasobject:
        raise ValueError(f"{name}: an object array cannot be saved without pickle")
    shape = first.shape if len(parts) == 1 else (sum(len(p) for p in parts), *first.shape[1:])
    header = {"descr": np.lib.format.dtype_to_descr(first.dtype), "fortran_order": False, "shape": shape}
    with z.open(f"{name}.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array_header_1_0(member, header)
        for part in parts:
            data = _bytes(part)
            for i in range(0, len(data), WRITE_CHUNK):
                member.write(data[i : i + WRITE_CHUNK])


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
    actual = _checksums({name: [a] for name, a in arrays.items()})
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
