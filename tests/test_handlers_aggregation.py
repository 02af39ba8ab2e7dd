"""Cells: shared or per thread, nothing lost, nothing kept for threads that ended."""

from __future__ import annotations

import threading

from vsrtel.handlers._aggregation import BUCKETS, LAST, TOTAL, Cells, Series


def test_threads_that_end_are_folded_and_still_count() -> None:
    cells = Cells(TOTAL, per_thread=True)
    series = Series({"a": "1"})

    def once() -> None:
        cells.cell(series)[0] += 1

    for _ in range(50):  # a thread per event, as some servers do
        thread = threading.Thread(target=once)
        thread.start()
        thread.join()
    once()
    assert cells.totals() == {series: [51]}
    assert len(cells.threads) <= 2  # this thread's; at most one not yet cleaned up


def test_histogram_and_last_value_cells_add_up_across_threads() -> None:
    histogram = Cells(BUCKETS, (1.0, 10.0), per_thread=True)
    last = Cells(LAST, per_thread=True)
    series = Series({})

    def record(value: float) -> None:
        cell = histogram.cell(series)
        cell[0 if value <= 1 else 1 if value <= 10 else 2] += 1
        cell[3] += value
        cell[4], cell[5] = min(cell[4], value), max(cell[5], value)
        mine = last.cell(series)
        mine[0], mine[1] = value, last.stamp()

    for value in (0.5, 5.0, 50.0):
        thread = threading.Thread(target=record, args=(value,))
        thread.start()
        thread.join()
    record(2.0)
    assert histogram.totals() == {series: [1, 2, 1, 57.5, 0.5, 50.0]}
    assert last.totals()[series][0] == 2.0  # the latest write, not the largest stamp's thread


def test_shared_cells_are_created_once_per_series() -> None:
    cells = Cells(TOTAL, per_thread=False)
    series = Series({})
    found: list[list[object]] = []
    threads = [threading.Thread(target=lambda: found.append(cells.cell(series))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(cell is found[0] for cell in found)
    assert len(cells.threads) == 1
