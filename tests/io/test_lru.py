"""The readers' and writers' shared cache: bounded, least recently used out first, values may be None."""

from facefix.io.lru import LruCache


def test_least_recently_used_goes_first_and_none_is_a_value():
    cache: LruCache[str, int | None] = LruCache(2)
    missing = object()
    cache.put("a", 1)
    cache.put("b", None)
    assert cache.get("a") == 1  # "a" is now the more recently used
    cache.put("c", 3)
    assert len(cache) == 2
    assert cache.get("b", missing) is missing and cache.get("a") == 1 and cache.get("c") == 3
    cache.put("d", None)
    assert cache.get("d", missing) is None and cache.get("a", missing) is missing
