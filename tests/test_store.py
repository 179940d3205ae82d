"""The shard store on its own: semantics of keys, lists and the memory cap."""

import numpy as np
import pytest

from mpistage.errors import KeyNotFoundError, StoreFullError
from mpistage.protocol import Kind, describe
from mpistage.server.store import ShardStore, StoredTensor
from mpistage.server.store.store import KEY_OVERHEAD

K = KEY_OVERHEAD + 1  # what a one-letter key costs beyond its bytes


def tensor(n: int) -> StoredTensor:
    desc, arr = describe(np.zeros(n, np.uint8))
    return StoredTensor(desc, arr)


def test_cap_rejects_and_keeps_old_values():
    s = ShardStore(max_bytes=100 + K)
    s.put_tensor("a", tensor(60))
    with pytest.raises(StoreFullError, match="store full"):
        s.put_tensor("b", tensor(50))
    assert s.used_bytes == 60 + K and s.exists(Kind.TENSOR, "a") and not s.exists(Kind.TENSOR, "b")
    with pytest.raises(StoreFullError):  # checked before a payload is received
        s.admit_put(Kind.TENSOR, "b", 1)
    s.admit_put(Kind.TENSOR, "a", 100)  # replacing counts the difference
    s.put_tensor("a", tensor(90))
    assert s.used_bytes == 90 + K
    with pytest.raises(StoreFullError):
        s.copy(Kind.TENSOR, "a", "c")
    s.delete(Kind.TENSOR, "a")
    assert s.used_bytes == 0


def test_rename_over_existing_key_frees_it():
    s = ShardStore()
    s.put_tensor("a", tensor(10))
    s.put_tensor("b", tensor(30))
    s.rename(Kind.TENSOR, "a", "b")
    assert s.used_bytes == 10 + K and list(s.tensors) == ["b"]
    with pytest.raises(KeyNotFoundError):
        s.rename(Kind.TENSOR, "a", "c")


def test_list_range_follows_redis_lrange():
    s = ShardStore()
    for i in range(5):
        s.append_to_list("l", f"d{i}")
    assert s.list_range("l", 0, -1) == [f"d{i}" for i in range(5)]
    assert s.list_range("l", 1, 2) == ["d1", "d2"]
    assert s.list_range("l", -2, -1) == ["d3", "d4"]
    assert s.list_range("l", 3, 100) == ["d3", "d4"]
    assert s.list_range("l", 4, 1) == [] and s.list_range("missing", 0, -1) == []


def test_list_length_is_limited_with_a_clear_error():
    from mpistage.errors import BadArgumentError
    from mpistage.server.store.store import MAX_LIST_LENGTH

    s = ShardStore()
    for i in range(MAX_LIST_LENGTH):
        s.append_to_list("l", f"d{i}")
    with pytest.raises(BadArgumentError, match="limit is 4096"):
        s.append_to_list("l", "one-too-many")
    assert s.list_length("l") == MAX_LIST_LENGTH
