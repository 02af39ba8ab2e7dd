"""Metric cells shared between worker processes: one memory-mapped file per process.

In multi-process mode (a directory given to `MetricsReporter`, or `VSRTEL_MULTIPROC_DIR`) each
process writes its series into its own file in the directory, and a scrape in any process (or
`vsrtel serve-dir`) merges every file.

**Writing.** A process's file is mapped into memory; a series' cell is a slice of a
`memoryview(mmap).cast("d")`: the handler's update (`cell[0] += 1`) is the same bytecode as on a
list cell, with no syscall, lock or `struct` call. One process writes each file, so the
in-process reasoning of `_aggregation` holds unchanged. Creating a series (rare) takes the
file's lock and appends a record: its key (metric name and labels, as JSON) and its numbers,
then publishes it by advancing the header's `used` count, so a reader never sees a half-written
record.

**Layout** (little-endian). A 64-byte header: magic ``VSRTELMP``, format version (u32), kind
(u32: 0 a worker's file, 1 the archive), pid (u64), start time (f64), `used` (u64: bytes of
records after the header). Then records, each 8-byte aligned: text length (u32), count of
doubles (u32), the text (UTF-8 JSON), padding, the doubles. The text is ``["m", name, shape,
bounds, mode, description, unit, monotonic, max_series]`` for a metric (no doubles), ``["s",
name, [[label, value], ...]]`` for a series (its cell's doubles), ``["f", [file names]]`` in the
archive: the worker files it already holds.

**Liveness.** The writer holds an exclusive `flock` on its file for its whole life; the kernel
drops it when the process ends, however it ends (SIGKILL too). A file nobody holds is dead.

**Reading.** A reader keeps each file's records parsed (they are only ever appended) and, per
metric, how to read its cells in one `struct` call and lay them out in one lasting order of the
metric's series; a scrape then adds the files' numbers position by position (`Directory.added`),
with no Python code per series or per number. An archive's numbers, which never change, are
read once.

**Compaction.** Dead files are folded into one archive, so the directory holds about one file
per live worker, however many were recycled. Whoever finds dead files (a scrape, a new worker)
takes the directory's lock (``.lock``, exclusive and non-blocking: one compactor at a time),
writes the next archive to a temporary file (the previous archive's series plus the dead
files'), fsyncs and renames it into place as ``archive-<generation>.vsm``, then deletes the
dead files and the previous archive. A reader takes the same lock shared while it lists the
directory and maps the files it will read, so it sees either the old archive and the dead
files or the new archive without them: never a file twice, never one missing. It then reads
the values from its own mappings, which stay valid after a file is deleted, and a dead file's
values no longer change, so a counter never goes down from one scrape to the next. (Integer
counts are exact; a float sum folded in another order may differ in its last bit.) A
compactor also removes the temporary files a crash left behind (`Directory._sweep`).
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import struct
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Final, cast

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, no multi-process mode
    fcntl = None  # type: ignore[assignment]

from vsrtel.handlers._aggregation import LAST, PER_THREAD, SCOPE, SHAPES, Cells, Series, Shape

_log = logging.getLogger("vsrtel")

ENV: Final = "VSRTEL_MULTIPROC_DIR"
"""The environment variable naming the directory, for servers that fork before user code."""

MAGIC: Final = b"VSRTELMP"
VERSION: Final = 1
HEADER: Final = 64
_HEAD = struct.Struct("<8sIIQdQ")  # magic, version, kind, pid, start, used
_USED_AT: Final = 32  # offset of `used` in the header
_RECORD = struct.Struct("<II")
_WORKER, _ARCHIVE = 0, 1
_INITIAL_SIZE: Final = 1 << 16
COMPACT_AFTER: Final = 8
"""Dead files a new worker leaves for a scrape to fold; past this many, it folds them itself."""
SUFFIX: Final = ".vsm"
STALE: Final = 60.0
"""Seconds after which a compaction removes a new worker's temporary file nobody holds."""

MODES: Final = frozenset({"sum", "max", "min", "latest", "live_sum", "all"})
"""How a `last_value` merges across processes (`reporter_options={"multiprocess_mode": ...}`)."""
DEFAULT_MODE: Final = "latest"
_LIVE_ONLY: Final = frozenset({"live_sum", "all"})

Key = tuple[tuple[str, str], ...]  # a series' labels, sorted


class BadFile(Exception):
    """A file in the directory that cannot be read: not vsrtel's, another version, truncated."""


@dataclass(frozen=True)
class MetricInfo:
    """What a file says about one metric: enough to merge and export it without its definition."""

    name: str
    shape: str
    bounds: tuple[float, ...]
    mode: str
    description: str
    unit: str
    monotonic: bool
    max_series: int

    def record(self) -> list[Any]:
        return ["m", self.name, self.shape, list(self.bounds), self.mode, self.description,
                self.unit, self.monotonic, self.max_series]

    @classmethod
    def parse(cls, item: list[Any]) -> MetricInfo:
        name, shape, bounds, mode, description, unit, monotonic, max_series = item[1:]
        if shape not in SHAPES or mode not in MODES:
            raise BadFile(f"metric {name!r} has an unknown shape or mode")
        return cls(str(name), shape, tuple(map(float, bounds)), mode, str(description),
                   str(unit), bool(monotonic), int(max_series))

    def size(self) -> int:
        return len(SHAPES[self.shape].new(self.bounds))


def key_of(attrs: Mapping[str, str]) -> Key:
    return tuple(sorted(attrs.items()))


# --------------------------------------------------------------------------------------------
# Writing: one file per process
# --------------------------------------------------------------------------------------------

class Writer:
    """This process's file in a directory: appends records, hands out cells."""

    def __init__(self, directory: str) -> None:
        self.pid = os.getpid()
        name = f"w-{self.pid}-{os.urandom(4).hex()}"
        self.path = os.path.join(directory, name + SUFFIX)
        # Made under a temporary name, then renamed: a reader never finds it without its lock
        # and header.
        temporary = os.path.join(directory, f".{name}.tmp")
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held while this process lives: its liveness
            os.ftruncate(fd, _INITIAL_SIZE)
            self.size = _INITIAL_SIZE
            self.map = mmap.mmap(fd, self.size)
            self.map[:HEADER] = _HEAD.pack(
                MAGIC, VERSION, _WORKER, self.pid, time.time(), 0
            ).ljust(HEADER, b"\0")
            os.rename(temporary, self.path)
        except BaseException:
            os.close(fd)
            _remove(temporary)
            raise
        self.fd = fd
        # Earlier, smaller mappings: their cells stay in use (they map the same file pages).
        self.maps = [self.map]
        self.used = 0
        self.lock = threading.Lock()
        self.defined: set[str] = set()

    def _append(self, item: list[Any], values: list[float]) -> memoryview[float]:
        """Write one record (call with `lock` held) and publish it; its doubles' view."""
        text = json.dumps(item, separators=(",", ":")).encode()
        at = HEADER + self.used
        data = _RECORD.size + len(text)
        data += -data % 8
        end = at + data + 8 * len(values)
        if end > self.size:
            size = self.size
            while size < end:
                size *= 2
            os.ftruncate(self.fd, size)
            self.map = mmap.mmap(self.fd, size)
            self.maps.append(self.map)
            self.size = size
        self.map[at:at + _RECORD.size + len(text)] = _RECORD.pack(len(text), len(values)) + text
        start = at + data
        self.map[start:end] = struct.pack(f"<{len(values)}d", *values)
        # Published last: a reader parses records up to `used` only.
        self.used = end - HEADER
        self.map[_USED_AT:_USED_AT + 8] = struct.pack("<Q", self.used)
        view: memoryview[float] = memoryview(self.map).cast("d")
        return view[start // 8:end // 8]

    def cell(
        self, info: MetricInfo, attrs: Mapping[str, str], new: list[Any]
    ) -> memoryview[float]:
        """A new cell of a series of `info`'s metric, holding `new`'s numbers."""
        with self.lock:
            if info.name not in self.defined:
                self._append(info.record(), [])
                self.defined.add(info.name)
            return self._append(["s", info.name, [list(p) for p in attrs.items()]], new)

    def abandon(self) -> None:
        """In a forked child: let go of the parent's file (its lock, so the parent's death can
        be seen) without touching it."""
        with suppress(OSError):
            os.close(self.fd)


# --------------------------------------------------------------------------------------------
# Reading: every file of the directory, mapped
# --------------------------------------------------------------------------------------------

class Source:
    """One file mapped for reading, its records parsed as they are published."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = os.path.basename(path)
        self.fd = os.open(path, os.O_RDONLY)
        try:
            self.ino = os.fstat(self.fd).st_ino
            self.map: mmap.mmap | None = None
            self.view: memoryview[float] | None = None
            self.archive: bool = False
            self.parsed = 0
            self.metrics: dict[str, MetricInfo] = {}
            self.series: dict[str, list[tuple[Key, int, int]]] = {}
            self.folded: frozenset[str] = frozenset()
            # Per metric: its series records counted into a directory's order, and its gather.
            self.enlisted: dict[str, int] = {}
            self.gathers: dict[str, _Gather] = {}
            self._remap()
            assert self.map is not None
            magic, version, kind, pid, _start, _ = _HEAD.unpack_from(self.map, 0)
            if magic != MAGIC:
                raise BadFile("not a vsrtel metrics file")
            if version != VERSION:
                raise BadFile(f"written by another version of vsrtel (format {version})")
            self.archive = kind == _ARCHIVE
            self.pid: int = pid
            self.refresh()
        except BaseException:
            self.close()
            raise

    def _remap(self) -> None:
        size = os.fstat(self.fd).st_size
        if size < HEADER:
            raise BadFile("truncated: shorter than its header")
        self.map = mmap.mmap(self.fd, size, access=mmap.ACCESS_READ)
        self.view = memoryview(self.map).cast("d") if size % 8 == 0 else None

    def refresh(self) -> None:
        """Parse the records published since the last call."""
        assert self.map is not None
        (used,) = struct.unpack_from("<Q", self.map, _USED_AT)
        if HEADER + used > len(self.map):
            self._remap()
            if HEADER + used > len(self.map) or self.view is None:
                raise BadFile("truncated: shorter than its records")
        at = HEADER + self.parsed
        end = HEADER + used
        buf = self.map
        while at < end:
            if at + _RECORD.size > end:
                raise BadFile("a record runs past the end")
            length, count = _RECORD.unpack_from(buf, at)
            data = _RECORD.size + length
            data += -data % 8
            start, stop = at + data, at + data + 8 * count
            if stop > end:
                raise BadFile("a record runs past the end")
            try:
                item = json.loads(bytes(buf[at + _RECORD.size:at + _RECORD.size + length]))
                kind = item[0]
                if kind == "m":
                    info = MetricInfo.parse(item)
                    self.metrics.setdefault(info.name, info)
                elif kind == "s":
                    name = item[1]
                    labels: Key = tuple(sorted((str(k), str(v)) for k, v in item[2]))
                    self.series.setdefault(name, []).append((labels, start // 8, count))
                elif kind == "f":
                    self.folded = frozenset(map(str, item[1]))
                else:
                    raise BadFile(f"unknown record {kind!r}")
            except (ValueError, TypeError, IndexError, KeyError) as exc:
                raise BadFile(f"a record cannot be read ({exc})") from None
            at = stop
        self.parsed = used

    def values(self, info: MetricInfo) -> Iterator[tuple[Key, list[float]]]:
        """Each series of `info`'s metric with its numbers (the view is read in place)."""
        view = self.view
        assert view is not None
        size = info.size()
        for labels, at, count in self.series.get(info.name, ()):
            if count == size:
                yield labels, cast("list[float]", view[at:at + count].tolist())

    def enlist(
        self, name: str, records: list[tuple[Key, int, int]], width: int, order: dict[Key, int]
    ) -> None:
        """Give each series of metric `name` in this file a place in `order` (appended).
        `records`: the metric's `series` as the caller took them (another thread's `refresh`
        may append to them meanwhile)."""
        if self.enlisted.get(name) != len(records):
            for labels, _, count in records:
                if count == width:
                    order.setdefault(labels, len(order))
            self.enlisted[name] = len(records)

    def gather(
        self,
        name: str,
        records: list[tuple[Key, int, int]],
        width: int,
        identity: tuple[float, ...],
        order: dict[Key, int],
    ) -> _Gather:
        """How to read metric `name`'s cells in `order` (rebuilt when either grew), once
        `enlist`ed with the same `records`."""
        key = (len(records), len(order))
        found = self.gathers.get(name)
        if found is None or found.key != key:
            found = self.gathers[name] = _Gather(
                [(labels, at) for labels, at, count in records if count == width],
                width, identity, order, key,
            )
        return found

    def close(self) -> None:
        # Not unmapped: the mapping goes with its last reference (a scrape may still read it).
        with suppress(OSError):
            os.close(self.fd)

    def live(self) -> bool:
        """Whether a process still holds the file (its writer's lock)."""
        if self.archive:
            return False
        try:
            fcntl.flock(self.fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        return False


class _Gather:
    """One file's cells of one metric, read in one pass and laid out in a directory's order of
    the metric's series: a `struct` unpacks every cell's doubles, skipping the records' text,
    and the cells are put in that order (when the file's own differs). Layer k holds each
    series' k-th cell in the file (a process has one cell per thread that recorded it), or
    the identity cell (`Shape.new`) where it has none."""

    __slots__ = ("cached", "complete", "getters", "identity", "key", "slots", "unpack")

    def __init__(
        self,
        records: list[tuple[Key, int]],
        width: int,
        identity: tuple[float, ...],
        order: dict[Key, int],
        key: tuple[int, int],
    ) -> None:
        self.key = key
        self.identity = identity
        self.cached: list[tuple[float, ...]] | None = None
        layout, pos = ["<"], 0
        for _, at in records:
            layout.append(f"{8 * at - pos}x{width}d")
            pos = 8 * (at + width)
        self.unpack = struct.Struct("".join(layout)).unpack_from
        n = len(order)
        where: list[list[int]] = []  # per layer: each place's record, or -1
        seen: dict[Key, int] = {}
        for i, (labels, _) in enumerate(records):
            k = seen.get(labels, 0)
            seen[labels] = k + 1
            if k == len(where):
                where.append([-1] * n)
            where[k][order[labels]] = i
        self.slots = [at for at, i in enumerate(where[0]) if i >= 0] if where else []
        self.complete = len(self.slots) == n
        pad = len(records) * width  # where `read` appends the identity cell
        self.getters: list[Callable[[tuple[float, ...]], tuple[float, ...]] | None] = []
        for layer in where:
            if len(records) == n and layer == list(range(n)):  # the file's own order
                self.getters.append(None)
                continue
            indices: list[int] = []
            for i in layer:
                start = i * width if i >= 0 else pad
                indices.extend(range(start, start + width))
            self.getters.append(itemgetter(*indices) if len(indices) > 1 else _one(indices[0]))

    def read(self, buffer: mmap.mmap, final: bool) -> list[tuple[float, ...]]:
        """The file's numbers of the metric, one flat tuple per layer; kept if `final` (an
        archive: its numbers never change)."""
        if self.cached is not None:
            return self.cached
        found: list[tuple[float, ...]] = []
        if self.getters:
            flat: tuple[float, ...] = self.unpack(buffer, 0)
            if self.getters == [None]:
                found = [flat]
            else:
                padded = flat + self.identity
                found = [flat if get is None else get(padded) for get in self.getters]
        if final:
            self.cached = found
        return found


_FOLD: Final = 16
"""Layers `Directory.added` adds in one pass (more passes past it: its memory stays bounded)."""


def _add(
    total: list[Any] | None, layers: list[Sequence[float]], buckets: bool, width: int
) -> list[Any]:
    """`total` (if any) and `layers`, flat cells of one width in one order, added position by
    position: a distribution's min and max (its last two numbers) as the smallest and largest."""
    if total is not None:
        layers = [total, *layers]
    if len(layers) == 1:
        return list(layers[0])
    found = list(map(sum, zip(*layers, strict=True)))
    if buckets:
        low, high = width - 2, width - 1
        found[low::width] = map(min, *(layer[low::width] for layer in layers))
        found[high::width] = map(max, *(layer[high::width] for layer in layers))
    return found


def _one(index: int) -> Callable[[tuple[float, ...]], tuple[float, ...]]:
    """`itemgetter` of one index, its item in a tuple."""
    return lambda flat: (flat[index],)


def merge_into(
    shape: Shape, mode: str, total: list[float], values: list[float], bounds: tuple[float, ...]
) -> None:
    """Add one process's numbers of a series into its total."""
    if shape.name != "last":
        shape.merge(total, values, bounds)
    elif mode in ("sum", "live_sum"):
        total[0] += values[0]
        total[1] = max(total[1], values[1])
    elif mode == "max":
        if values[0] > total[0]:
            total[:] = values
    elif mode == "min":
        if values[0] < total[0]:
            total[:] = values
    elif values[1] > total[1]:  # latest (and all: one process per series)
        total[:] = values


class Directory:
    """One directory, as this process sees it: its writer (created on first use, a new one
    after a fork) and the files it reads."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._writer: Writer | None = None
        self._lock = threading.Lock()
        self._sources: dict[str, Source] = {}
        self._bad: set[tuple[str, int]] = set()  # files skipped, by name and inode
        self._mismatched: set[str] = set()
        self.skipped_files = 0
        """Files found unreadable (each counted once)."""
        self._scan: tuple[int, list[tuple[Source, bool]]] | None = None
        # Per metric: each series' place in the merged view (see `added`), for good.
        self._orders: dict[str, dict[Key, int]] = {}
        self._merging = threading.Lock()
        self._lockfile = os.path.join(path, ".lock")

    def writer(self) -> Writer:
        found = self._writer
        if found is not None:
            return found
        with self._lock:
            if self._writer is None:
                self._writer = Writer(self.path)
                # A new worker: recycled ones may have left files. Folding them rewrites the
                # archive, so a worker does it past a few only (a scrape folds any).
                self._compact(minimum=COMPACT_AFTER)
            return self._writer

    def mismatch(self, metric: str, file: str) -> None:
        """Report a file whose definition of `metric` differs from the one merged by (once per
        metric: the archive takes the dead files' definition with it)."""
        if metric not in self._mismatched:
            self._mismatched.add(metric)
            _log.warning(
                "metrics directory %s: file %s defines metric %s with other buckets or another "
                "kind (a different version of the service?); its series are left out",
                self.path, file, metric,
            )

    def forked(self) -> None:
        if self._writer is not None:
            self._writer.abandon()
        self._writer = None
        self._lock = threading.Lock()
        self._merging = threading.Lock()
        self._scan = None

    @contextmanager
    def _dirlock(self, how: int) -> Iterator[bool]:
        fd = os.open(self._lockfile, os.O_RDWR | os.O_CREAT, 0o644)
        _HELD.add(fd)
        try:
            try:
                fcntl.flock(fd, how)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            _HELD.discard(fd)
            os.close(fd)  # drops the lock

    def _open(self, name: str) -> Source | None:
        path = os.path.join(self.path, name)
        known = self._sources.get(name)
        try:
            if known is not None:
                if os.stat(path).st_ino == known.ino:
                    known.refresh()
                    return known
                known.close()
                del self._sources[name]
            found = Source(path)
        except FileNotFoundError:
            return None
        except (BadFile, OSError, ValueError) as exc:
            if known is not None:
                self._sources.pop(name, None)
                known.close()
            try:
                ino = os.stat(path).st_ino
            except OSError:
                ino = 0
            if (name, ino) not in self._bad:
                self._bad.add((name, ino))
                self.skipped_files += 1
                _log.warning("metrics directory %s: skipping file %s: %s", self.path, name, exc)
            return None
        self._sources[name] = found
        return found

    def sources(self) -> list[tuple[Source, bool]]:
        """The files a scrape reads, each with whether its writer lives: the newest archive and
        the worker files it does not hold (see the module's docstring)."""
        scope = SCOPE.current
        if scope is not None and self._scan is not None and self._scan[0] == scope:
            return self._scan[1]
        with self._lock, self._dirlock(fcntl.LOCK_SH):
            found = self._list()
        if scope is not None:
            self._scan = (scope, found)
        if any(not live and not source.archive for source, live in found):
            with self._lock:
                self._compact()
        return found

    def added(
        self, info: MetricInfo, sources: list[tuple[Source, bool]]
    ) -> dict[Key, list[Any]]:
        """A counter's, sum's or distribution's series in `sources`, every cell of each added
        up (as `merge_into` adds them) and its numbers as a list cell holds them (`_numbers`).

        In bulk: each file's cells are read in one pass in one order (`_Gather`) and added
        position by position, with no Python code run per series or per number; the order,
        and how to read each file, are kept from one scrape to the next."""
        name = info.name
        identity = tuple(SHAPES[info.shape].new(info.bounds))
        width = len(identity)
        with self._merging:
            order = self._orders.setdefault(name, {})
            readable = []
            for source, _ in sources:
                other = source.metrics.get(name)
                if other is None:
                    continue
                if (other.shape, other.bounds) != (info.shape, info.bounds):
                    self.mismatch(name, source.name)
                    continue
                records = source.series.get(name, [])[:]
                source.enlist(name, records, width, order)
                readable.append((source, records))
            buckets = info.shape == "buckets"
            total: list[Any] | None = None
            layers: list[Sequence[float]] = []
            complete = False
            present: set[int] = set()
            for source, records in readable:
                gather = source.gather(name, records, width, identity, order)
                assert source.map is not None
                layers.extend(gather.read(source.map, source.archive))
                if len(layers) >= _FOLD:  # bounded memory, however many files
                    total, layers = _add(total, layers, buckets, width), []
                if gather.complete:
                    complete = True
                elif not complete:
                    present.update(gather.slots)
            if layers:
                total = _add(total, layers, buckets, width)
            places = list(order.values()) if complete else sorted(present)
            keys = list(order)
        if total is None:
            return {}
        if buckets:  # counts as ints, as a list cell holds them
            for i in range(width - 3):
                total[i::width] = map(int, total[i::width])
        else:
            total = list(map(_integral, total))
        return {keys[at]: total[at * width:at * width + width] for at in places}

    def _compact(self, minimum: int = 1) -> None:
        """`compact`, a failure (a full disk) reported instead of raised: the scrape or the
        event that set it off goes on, and a later one tries again."""
        try:
            self.compact(minimum)
        except (OSError, BadFile) as exc:
            _log.warning("metrics directory %s: compacting dead workers' files failed: %s",
                         self.path, exc)

    def _list(self) -> list[tuple[Source, bool]]:
        try:
            names = sorted(n for n in os.listdir(self.path) if n.endswith(SUFFIX))
        except OSError as exc:
            _log.warning("metrics directory %s cannot be read: %s", self.path, exc)
            return []
        archives = [n for n in names if n.startswith("archive-")]
        archive = None
        for name in sorted(archives, key=_generation, reverse=True):
            archive = self._open(name)
            if archive is not None:
                break
        folded = archive.folded if archive is not None else frozenset()
        found = [] if archive is None else [(archive, False)]
        for name in names:
            if name.startswith("w-") and name not in folded:
                source = self._open(name)
                if source is not None:
                    found.append((source, source.live()))
        for name in list(self._sources):
            if name not in names:
                self._sources.pop(name).close()
        return found

    def _dead(self) -> tuple[Source | None, list[Source]]:
        """The newest archive and the dead worker files it does not hold. A live worker's file
        is only tested, not read: a new worker compacting need not parse every live file."""
        try:
            names = sorted(n for n in os.listdir(self.path) if n.endswith(SUFFIX))
        except OSError:
            return None, []
        archive = None
        for name in sorted((n for n in names if n.startswith("archive-")), key=_generation,
                           reverse=True):
            archive = self._open(name)
            if archive is not None:
                break
        folded = archive.folded if archive is not None else frozenset()
        dead = []
        for name in names:
            if name.startswith("w-") and name not in folded and not _held(
                os.path.join(self.path, name)
            ):
                source = self._open(name)
                if source is not None and not source.live():
                    dead.append(source)
        return archive, dead

    def _sweep(self) -> None:
        """Remove the temporary files a crash left (call with the directory's lock held): a
        compaction's, which only the lock's holder writes; a new worker's file or a setup's
        probe once no process holds it and it is older than `STALE` seconds (a worker makes its
        file, locks it and renames it in a moment)."""
        try:
            names = os.listdir(self.path)
        except OSError:
            return
        now = time.time()
        for name in names:
            path = os.path.join(self.path, name)
            if name.startswith(".archive-") and name.endswith(".tmp"):
                _remove(path)
            elif name.startswith(".probe-") or (name.startswith(".w-") and name.endswith(".tmp")):
                try:
                    stale = now - os.stat(path).st_mtime > STALE
                except OSError:
                    continue
                if stale and not _held(path):
                    _remove(path)

    def compact(self, minimum: int = 1) -> bool:
        """Fold dead workers' files into a new archive, if there are at least `minimum` (call
        with `_lock` held); False if another process is compacting."""
        with self._dirlock(fcntl.LOCK_EX | fcntl.LOCK_NB) as locked:
            if not locked:
                return False
            self._sweep()
            archive, dead = self._dead()
            if len(dead) < max(minimum, 1):
                return True
            generation = 0 if archive is None else _generation(archive.name)
            infos: dict[str, MetricInfo] = {}
            totals: dict[str, dict[Key, list[float]]] = {}
            for source in ([] if archive is None else [archive]) + dead:
                for name, info in source.metrics.items():
                    known = infos.setdefault(name, info)
                    if (known.shape, known.bounds) != (info.shape, info.bounds):
                        continue
                    if known.mode in _LIVE_ONLY:  # a dead worker's live-only series are gone
                        continue
                    series = totals.setdefault(name, {})
                    for labels, values in source.values(known):
                        total = series.get(labels)
                        if total is None:
                            series[labels] = values
                        else:
                            merge_into(SHAPES[known.shape], known.mode, total, values, known.bounds)
            # Dead files an earlier compactor folded but could not delete: named again, so no
            # reader counts them twice until they are gone.
            leftover = [n for n in (archive.folded if archive else ()) if _exists(self.path, n)]
            name = f"archive-{generation + 1}{SUFFIX}"
            _write_archive(self.path, name, infos, totals, [s.name for s in dead] + leftover)
            for source in dead:
                _remove(source.path)
            for gone in leftover:
                _remove(os.path.join(self.path, gone))
            if archive is not None:
                _remove(archive.path)
            return True


def _held(path: str) -> bool:
    """Whether a process holds the file at `path` (its writer's lock); False if it is gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # drops a lock taken
    return False


def _generation(name: str) -> int:
    try:
        return int(name[len("archive-"):-len(SUFFIX)])
    except ValueError:
        return -1


def _exists(directory: str, name: str) -> bool:
    return os.path.exists(os.path.join(directory, name))


def _remove(path: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)


def _write_archive(
    directory: str,
    name: str,
    infos: Mapping[str, MetricInfo],
    totals: Mapping[str, Mapping[Key, list[float]]],
    folded: list[str],
) -> None:
    """Write an archive atomically: a temporary file, fsynced, renamed into place."""
    body = bytearray()

    def append(item: list[Any], values: list[float]) -> None:
        text = json.dumps(item, separators=(",", ":")).encode()
        body.extend(_RECORD.pack(len(text), len(values)) + text)
        body.extend(b"\0" * (-len(body) % 8))
        body.extend(struct.pack(f"<{len(values)}d", *values))

    append(["f", sorted(folded)], [])
    for metric, info in infos.items():
        append(info.record(), [])
        for labels, values in totals.get(metric, {}).items():
            append(["s", metric, [list(p) for p in labels]], values)
    head = _HEAD.pack(MAGIC, VERSION, _ARCHIVE, 0, time.time(), len(body)).ljust(HEADER, b"\0")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".archive-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(head + bytes(body))
            out.flush()
            os.fsync(out.fileno())
        os.rename(tmp, os.path.join(directory, name))
    except BaseException:
        _remove(tmp)
        raise
    try:
        dirfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
    except OSError:
        pass


def metrics(directory: Directory) -> dict[str, MetricInfo]:
    """Every metric the directory's files define (the first definition of each name)."""
    infos: dict[str, MetricInfo] = {}
    for source, _ in directory.sources():
        for name, info in source.metrics.items():
            infos.setdefault(name, info)
    return infos


def merged(
    directory: Directory, name: str, info: MetricInfo | None = None
) -> tuple[MetricInfo | None, dict[Key, list[Any]]]:
    """Every process's series of metric `name`, added up per series (see `merge_into`; a
    counter's, sum's or distribution's in bulk: `Directory.added`); for a gauge in mode "all",
    each live process's own series, its labels with a ``pid``. The numbers are as a list cell
    holds them (`_numbers`: counts and whole totals as ints).

    `info` is the definition to merge by (the calling process's own); by default the first
    file's. Files defining the metric with another shape or buckets are skipped (a warning,
    once per metric)."""
    sources = directory.sources()
    for source, _ in sources:
        if info is not None:
            break
        info = source.metrics.get(name)
    if info is None:
        return None, {}
    if info.shape != "last":
        if info.mode == "live_sum":  # an up-down sum of live workers only (in progress now)
            sources = [(source, live) for source, live in sources if live]
        return info, directory.added(info, sources)
    totals: dict[Key, list[float]] = {}
    for source, live in sources:
        other = source.metrics.get(name)
        if other is None:
            continue
        if (other.shape, other.bounds) != (info.shape, info.bounds):
            directory.mismatch(name, source.name)
            continue
        if info.mode in _LIVE_ONLY and not live:
            continue
        mine: dict[Key, list[float]] = {}
        # A process's cells of one series (one per thread): the latest value.
        for labels, values in source.values(info):
            known = mine.get(labels)
            if known is None:
                mine[labels] = values
            else:
                merge_into(LAST, "latest", known, values, info.bounds)
        for labels, values in mine.items():
            if info.mode == "all":
                labels = (*labels, ("pid", str(source.pid)))
            total = totals.get(labels)
            if total is None:
                totals[labels] = values
            else:
                merge_into(LAST, info.mode, total, values, info.bounds)
    return info, {labels: _numbers(LAST, values, info.bounds) for labels, values in totals.items()}


# --------------------------------------------------------------------------------------------
# Scrape scope, per-process state, fork
# --------------------------------------------------------------------------------------------

_DIRECTORIES: dict[str, Directory] = {}
_DIRECTORIES_LOCK = threading.Lock()


def directory(path: str | os.PathLike[str]) -> Directory:
    """This process's `Directory` for `path`, checked on first use.

    ValueError naming the directory when it is missing, not a directory, not writable, cannot
    hold memory-mapped files, or holds files of another version of vsrtel.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"directory must be a path, got {path!r}")
    if fcntl is None:  # pragma: no cover - Windows
        raise ValueError(f"metrics directory {path!r}: multi-process mode needs flock (POSIX)")
    full = os.path.abspath(os.fspath(path))
    with _DIRECTORIES_LOCK:
        found = _DIRECTORIES.get(full)
        if found is None:
            check(full)
            found = _DIRECTORIES[full] = Directory(full)
            _check_uwsgi(full)
        return found


def _check_uwsgi(path: str) -> None:
    """Warn when uWSGI will fork this process's workers without Python's fork hooks: it forks
    from C, and only runs them with ``--py-call-osafterfork``; without it (or ``--lazy-apps``,
    each worker loading the app itself) every worker would write into the cells the master made
    before the fork, and counts would be lost."""
    uwsgi = sys.modules.get("uwsgi")  # only inside a uWSGI process
    options = getattr(uwsgi, "opt", None)
    if not isinstance(options, dict):
        return
    if not any(options.get(name) for name in ("lazy-apps", "lazy", "py-call-osafterfork")):
        _log.warning(
            "metrics directory %s: uWSGI forks its workers without running Python's fork "
            "hooks, so they would share this process's metric cells; run uWSGI with "
            "--lazy-apps or --py-call-osafterfork", path,
        )


def check(path: str) -> None:
    """Raise ValueError naming `path` unless it can hold this version's shared metric files."""
    if not os.path.isdir(path):
        why = "does not exist" if not os.path.exists(path) else "is not a directory"
        raise ValueError(f"metrics directory {path!r} {why}; create it first")
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".probe-")
    except OSError as exc:
        raise ValueError(f"metrics directory {path!r} is not writable: {exc.strerror}") from None
    try:
        os.ftruncate(fd, mmap.PAGESIZE)
        mapped = mmap.mmap(fd, mmap.PAGESIZE)
        mapped[:8] = MAGIC
        mapped.close()
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"metrics directory {path!r} cannot hold memory-mapped files: {exc}"
        ) from None
    finally:
        os.close(fd)
        _remove(probe)
    for name in os.listdir(path):
        if not name.endswith(SUFFIX):
            continue
        try:
            with open(os.path.join(path, name), "rb") as file:
                head = file.read(_HEAD.size)
        except OSError:
            continue
        if len(head) == _HEAD.size and head[:8] == MAGIC:
            version = _HEAD.unpack(head)[1]
            if version != VERSION:
                raise ValueError(
                    f"metrics directory {path!r} holds {name}, written by another version of "
                    f"vsrtel (file format {version}, this one reads {VERSION}): empty the "
                    "directory (or use a new one) when deploying a new version"
                )


def reader(directory: Directory, info: MetricInfo) -> SharedCells:
    """Cells that only read `info`'s metric from `directory` (a server of the merged view)."""
    shape = SHAPES[info.shape]
    return SharedCells(shape, info.bounds, directory, info, writable=False)


class SharedCells(Cells):
    """A metric's cells in a directory's files: written in this process's file, read (and
    added up) over every process's file. `totals()` has `Cells.totals`' type, so readers do
    not know the difference."""

    __slots__ = ("directory", "info", "kept", "keys", "writable")

    def __init__(
        self,
        shape: Shape,
        bounds: tuple[float, ...],
        directory: Directory,
        info: MetricInfo,
        *,
        per_thread: bool = PER_THREAD,
        writable: bool = True,
    ) -> None:
        super().__init__(shape, bounds, per_thread=per_thread)
        self.directory = directory
        self.info = info
        self.writable = writable
        self.keys: dict[Key, Series] = {}  # the merged view's series, one object each
        self.kept: set[Key] = set()  # series within the cap, kept for good (see `totals`)
        # A gauge's stamp is compared across processes: the wall clock.
        self.stamp = time.time
        _CELLS.add(self)

    def cell(self, series: Series) -> Any:
        cells: dict[Any, Any] = self.mine()
        cell = cells.get(series)
        if cell is None:
            with self.lock:
                cell = cells.get(series)
                if cell is None:
                    if not self.writable:
                        raise RuntimeError("these cells are read only")
                    writer = self.directory.writer()
                    cell = writer.cell(self.info, series.attrs, self.shape.new(self.bounds))
                    cells[series] = cell
                    self.keys.setdefault(key_of(series.attrs), series)
        return cell

    def retire(self, cells: dict[Any, Any]) -> None:
        # Nothing to fold: the thread's cells stay in the file (in every total) and in
        # `threads` (in `own`).
        pass

    def own(self) -> dict[Series, list[Any]]:
        """This process's series alone (its threads' cells added up), for a push exporter each
        worker runs: summed over the workers it is the merged view, not N times it."""
        found: dict[Series, list[float]] = {}
        with self.lock:
            dicts = list(self.threads.values())
        for cells in dicts:
            for series, cell in list(cells.items()):
                if not isinstance(series, Series):  # a tag key: the same cell again
                    continue
                values = list(cell)
                total = found.get(series)
                if total is None:
                    found[series] = values
                else:
                    merge_into(self.shape, "latest", total, values, self.bounds)
        return {series: _numbers(self.shape, v, self.bounds) for series, v in found.items()}

    def forget(self) -> None:
        """In a forked child: start with no cells (new ones go to the child's own file)."""
        self.lock = threading.Lock()
        self.threads.clear()
        self.retired.clear()
        for attribute in ("cells", "marker"):
            with suppress(AttributeError):
                delattr(self.local, attribute)

    def totals(self) -> dict[Series, list[Any]]:
        """Every process's series, merged (see `merged`). Past the metric's `max_series`,
        series new to this reader are added into the overflow series; a series once within
        the cap stays so, and one past it stays in the overflow, so no total goes down."""
        info, found = merged(self.directory, self.info.name, self.info)
        if info is None:
            return {}
        kept, keys = self.kept, self.keys
        cap = self.info.max_series
        # Series new to this reader join those kept while there is room, in label order (the
        # same choice in every process); a series once kept stays so.
        for labels in sorted(labels for labels in found if labels not in kept):
            if labels == _OVERFLOW_KEY or len(kept) < cap:
                kept.add(labels)
        result: dict[Series, list[Any]] = {}
        overflow: list[Any] | None = None
        shape = self.shape
        for labels, values in found.items():
            if labels in kept:
                series = keys.get(labels)
                if series is None:
                    series = keys[labels] = Series(dict(labels))
                result[series] = values
            elif overflow is None:
                overflow = values
            else:
                merge_into(shape, info.mode, overflow, values, self.bounds)
        if overflow is not None:
            series = keys.get(_OVERFLOW_KEY)
            if series is None:
                series = keys[_OVERFLOW_KEY] = Series(dict(_OVERFLOW_KEY))
            before = result.get(series)
            if before is not None:
                merge_into(shape, info.mode, before, overflow, self.bounds)
                overflow = before
            result[series] = _numbers(shape, overflow, self.bounds)
        return result


_OVERFLOW_KEY: Final[Key] = (("otel.metric.overflow", "true"),)


def _integral(value: float) -> int | float:
    if isinstance(value, float) and value.is_integer() and -(2**53) <= value <= 2**53:
        return int(value)
    return value


def _numbers(shape: Shape, values: list[float], bounds: tuple[float, ...]) -> list[Any]:
    """A merged cell as a list cell holds it: counts as ints, whole totals as ints."""
    if shape.name == "buckets":
        n = len(bounds) + 1
        return [*map(int, values[:n]), *values[n:]]
    return [_integral(values[0]), *values[1:]]


_CELLS: weakref.WeakSet[SharedCells] = weakref.WeakSet()
_HELD: set[int] = set()  # the file descriptors of directory locks being held


def _after_fork_in_child() -> None:
    global _DIRECTORIES_LOCK
    _DIRECTORIES_LOCK = threading.Lock()
    # A directory lock another thread held at the fork: the child's copy would hold it for the
    # child's whole life (a flock belongs to the open file, which the copy shares).
    for fd in list(_HELD):
        with suppress(OSError):
            os.close(fd)
    _HELD.clear()
    for found in _DIRECTORIES.values():
        found.forked()
    for cells in list(_CELLS):
        cells.forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

__all__ = [
    "DEFAULT_MODE", "ENV", "MODES", "SharedCells", "directory", "merged", "metrics", "reader"
]
