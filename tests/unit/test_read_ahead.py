"""store.base.read_ahead: the reads behind a job's hosts (HostStore.read_ahead), done in a
background thread while the caller uses the first ones."""

from __future__ import annotations

import threading

import pytest

from mailfleet.store.base import read_ahead
from tests.waiting import wait_until


def test_every_chunk_is_read_once_and_yielded_in_order() -> None:
    reads: list[int] = []
    chunks = [[1, 2], [3], [4, 5, 6], [7]]

    def read(chunk: list[int]) -> list[int]:
        reads.append(chunk[0])
        return [n * 10 for n in chunk]

    assert list(read_ahead(chunks, read)) == [[10, 20], [30], [40, 50, 60], [70]]
    assert reads == [1, 3, 4, 7]


def test_the_next_chunks_are_read_while_the_caller_works_on_the_first() -> None:
    read_so_far: list[int] = []
    all_read = threading.Event()

    def read(chunk: int) -> int:
        read_so_far.append(chunk)
        if len(read_so_far) == 3:
            all_read.set()
        return chunk

    answers = read_ahead([1, 2, 3], read)
    assert next(answers) == 1
    # The caller has not asked for 2 and 3: the reader fetched them meanwhile.
    assert all_read.wait(10)
    assert list(answers) == [2, 3]


def test_a_failed_read_is_raised_where_its_chunk_comes_and_nothing_after_it_is_read() -> None:
    reads: list[int] = []

    def read(chunk: int) -> int:
        reads.append(chunk)
        if chunk == 2:
            raise ConnectionError("DynamoDB is unreachable")
        return chunk

    answers = read_ahead([1, 2, 3], read)
    assert next(answers) == 1
    with pytest.raises(ConnectionError, match="unreachable"):
        next(answers)
    assert reads == [1, 2]


def test_a_caller_that_stops_early_stops_the_reads() -> None:
    release = threading.Event()
    reads: list[int] = []

    def read(chunk: int) -> int:
        reads.append(chunk)
        if chunk == 1:
            release.wait(10)  # the reader is busy with chunk 1 while the caller stops
        return chunk

    answers = read_ahead([0, 1, 2, 3], read)
    assert next(answers) == 0
    answers.close()  # the caller is done (e.g. the job was cancelled)
    release.set()
    wait_until(lambda: not any(t.name == "read-ahead" for t in threading.enumerate()), 10,
               what="the reader to end")
    assert reads == [0, 1]


def test_one_chunk_or_none_is_read_in_the_callers_thread() -> None:
    threads: list[str] = []

    def read(chunk: int) -> int:
        threads.append(threading.current_thread().name)
        return chunk

    assert list(read_ahead([], read)) == []
    assert list(read_ahead([5], read)) == [5]
    assert threads == [threading.current_thread().name]
