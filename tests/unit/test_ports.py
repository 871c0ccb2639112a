"""Port candidates (pure) and the bind test (loopback only)."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

import pytest

from sh_jupyter.supervisor.ports import candidates, is_free, probe_address


def test_candidates_distinct_and_in_range() -> None:
    ports = candidates(20000, 29999, 50, random.Random(1))
    assert len(ports) == 50
    assert len(set(ports)) == 50
    assert all(20000 <= p <= 29999 for p in ports)


def test_candidates_capped_by_range_size() -> None:
    ports = candidates(25000, 25004, 10, random.Random(2))
    assert sorted(ports) == [25000, 25001, 25002, 25003, 25004]


def test_single_port_range() -> None:
    assert candidates(25000, 25000, 5, random.Random(3)) == [25000]


def test_zero_count() -> None:
    assert candidates(20000, 29999, 0, random.Random(4)) == []


def test_candidates_deterministic_with_seed() -> None:
    a = candidates(20000, 29999, 5, random.Random(1234))
    b = candidates(20000, 29999, 5, random.Random(1234))
    assert a == b
    assert a == random.Random(1234).sample(range(20000, 30000), 5)


def test_candidates_vary_between_seeds() -> None:
    results = {tuple(candidates(20000, 29999, 5, random.Random(seed))) for seed in range(20)}
    assert len(results) == 20


def test_candidates_without_rng_use_system_randomness() -> None:
    ports = candidates(20000, 29999, 5)
    assert len(set(ports)) == 5
    assert all(20000 <= p <= 29999 for p in ports)


def test_candidates_spread_over_the_range() -> None:
    ports = candidates(20000, 29999, 200, random.Random(7))
    assert min(ports) < 21000
    assert max(ports) > 29000


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def test_is_free_false_for_a_listening_port(listener: int) -> None:
    assert is_free("127.0.0.1", listener) is False


def test_is_free_false_on_wildcard_for_a_loopback_listener(listener: int) -> None:
    assert is_free("0.0.0.0", listener) is False


def test_is_free_true_for_an_unused_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert is_free("127.0.0.1", port) is True


def test_is_free_leaves_the_port_free() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert is_free("127.0.0.1", port) is True
    assert is_free("127.0.0.1", port) is True


def test_is_free_raises_for_an_address_not_on_this_host() -> None:
    # 192.0.2.0/24 is TEST-NET-1: never assigned to a local interface, so bind fails with
    # EADDRNOTAVAIL, which is a configuration error rather than "port busy".
    with pytest.raises(OSError):
        is_free("192.0.2.1", 25000)


@pytest.mark.parametrize(("bind", "probe"), [("0.0.0.0", "127.0.0.1"), ("", "127.0.0.1"),
                                             ("10.1.2.3", "10.1.2.3"),
                                             ("127.0.0.1", "127.0.0.1")])
def test_probe_address(bind: str, probe: str) -> None:
    assert probe_address(bind) == probe
