"""Table state larger than a changelog record (streams/app.py ``_TableView``): written as
pages within the limit, read back exactly, by this view and by a new one over a store
rebuilt from the changelog records alone (what faust's recovery does)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.app import PAGED, RECORD_OVERHEAD, StateError, _TableView, page_key

CHANGELOG = "engine-service-state-changelog"


def table(store: dict[bytes, bytes]) -> Any:
    return SimpleNamespace(
        data=store, changelog_topic=SimpleNamespace(get_topic_name=lambda: CHANGELOG)
    )


def restore(records: list[Any]) -> dict[bytes, bytes]:
    """The store a recovery builds from the changelog: the last value per key, tombstones
    deleting (compaction keeps the same)."""
    store: dict[bytes, bytes] = {}
    for r in records:
        if r.value is None:
            store.pop(r.key, None)
        else:
            store[r.key] = r.value
    return store


def record_size(r: Any) -> int:
    return len(r.key) + len(r.value or b"") + RECORD_OVERHEAD


LIMIT = 4096


def test_a_state_larger_than_a_record_is_paged_and_read_back() -> None:
    store: dict[bytes, bytes] = {}
    view = _TableView(table(store), 3, LIMIT)
    value = b'{"ledger":[' + b",".join(b'"r%05d"' % i for i in range(3000)) + b"]}"
    assert len(value) > 5 * LIMIT
    view.put("surat-pindah", value)
    records = view.drain()
    assert len(records) > 5
    assert all(record_size(r) <= LIMIT for r in records)
    assert all((r.topic, r.partition) == (CHANGELOG, 3) for r in records)
    assert records[-1].key == b"surat-pindah"
    assert records[-1].value.startswith(PAGED)
    assert view.get("surat-pindah") == value
    restored = _TableView(table(restore(records)), 3, LIMIT)
    assert restored.get("surat-pindah") == value


def test_a_state_that_shrinks_deletes_the_pages_it_no_longer_has() -> None:
    store: dict[bytes, bytes] = {}
    view = _TableView(table(store), 0, LIMIT)
    view.put("k", b"x" * (10 * LIMIT))
    view.put("k", b'{"small":1}')
    records = view.drain()
    assert set(store) == {b"k"}
    tombstones = [r.key for r in records if r.value is None]
    assert len(tombstones) == 11
    assert tombstones[0] == page_key(b"k", 0)
    assert restore(records) == {b"k": b'{"small":1}'}


def test_a_missing_page_is_an_error_not_a_smaller_state() -> None:
    store: dict[bytes, bytes] = {}
    view = _TableView(table(store), 0, LIMIT)
    view.put("k", b"y" * (3 * LIMIT))
    del store[page_key(b"k", 1)]
    with pytest.raises(StateError, match="page 1 of 4 is missing"):
        _TableView(table(store), 0, LIMIT).get("k")
    store[page_key(b"k", 1)] = b"z" * 10
    with pytest.raises(StateError, match="do not make the state"):
        _TableView(table(store), 0, LIMIT).get("k")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "svc-" + "x" * 150]), st.integers(0, 9 * LIMIT)),
        min_size=1,
        max_size=12,
    ),
    st.sampled_from([LIMIT, 2 * LIMIT + 7]),
)
def test_any_sequence_of_writes_restores_the_last_state_of_each_key_exactly(
    writes: list[tuple[str, int]], limit: int
) -> None:
    store: dict[bytes, bytes] = {}
    view = _TableView(table(store), 1, limit)
    changelog: list[Any] = []
    last: dict[str, bytes] = {}
    for number, (key, size) in enumerate(writes):
        value = (b"%d:" % number + bytes(range(256)) * (size // 256 + 1))[:size]
        view.put(key, value)
        last[key] = value
        batch = view.drain()
        assert all(record_size(r) <= limit for r in batch)
        changelog += batch
    fresh = _TableView(table(restore(changelog)), 1, limit)
    for key, value in last.items():
        assert fresh.get(key) == value
        assert view.get(key) == value
    assert restore(changelog) == store  # nothing left behind: the store is what a restore gets
