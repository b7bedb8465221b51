"""w2s.ports: rendezvous ports are drawn where nothing else on the node is handed ports, free, and never twice
within the reservation time."""

from __future__ import annotations

import socket

import pytest

from w2s import ports


@pytest.fixture(autouse=True)
def reservations(tmp_path, monkeypatch):
    monkeypatch.setattr(ports, "reservations_dir", lambda: tmp_path / "reserved")
    return tmp_path / "reserved"


def _ephemeral(monkeypatch, tmp_path, low: int, high: int) -> None:
    setting = tmp_path / "ip_local_port_range"
    setting.write_text(f"{low}\t{high}\n")
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE_FILE", setting)


def test_a_port_is_drawn_above_the_ephemeral_range_free_and_reserved(reservations):
    _, high = ports.ephemeral_range()
    chosen = [ports.rendezvous_port("127.0.0.1") for _ in range(20)]
    if ports.TOP - high >= ports.MIN_WINDOW:  # Linux's default range, as on every machine this suite runs on
        assert all(high < p <= ports.TOP for p in chosen), chosen
    assert len(set(chosen)) == 20  # reserved: never drawn twice, though none of them is bound yet
    assert sorted(int(p.name) for p in reservations.iterdir()) == sorted(chosen)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", chosen[0]))
        sock.listen()


def test_the_window_is_below_the_ephemeral_range_where_nothing_is_left_above_it(tmp_path, monkeypatch):
    _ephemeral(monkeypatch, tmp_path, 49152, 65535)  # as the BSDs and macOS have it
    assert ports.draw_window() == (ports.LOWEST_BELOW, 49151)
    assert ports.LOWEST_BELOW <= ports.rendezvous_port("127.0.0.1") < 49152
    _ephemeral(monkeypatch, tmp_path, 1024, 65000)  # a server tuned for many connections: the kernel chooses
    assert ports.draw_window() is None
    assert 1024 <= ports.rendezvous_port("127.0.0.1") <= 65000
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE_FILE", tmp_path / "absent")
    assert ports.ephemeral_range() == ports.LINUX_DEFAULT_EPHEMERAL  # this suite runs on Linux


def test_a_port_in_use_or_reserved_by_another_process_is_passed_over(tmp_path, monkeypatch, reservations):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        reservations.mkdir()
        (reservations / "61234").touch()  # another process drew it a moment ago and has not bound it yet
        draws = iter([taken, 61234, 61235])

        class Draws:
            def randint(self, low: int, high: int) -> int:
                return next(draws)

        monkeypatch.setattr(ports.random, "SystemRandom", Draws)
        assert ports.rendezvous_port("127.0.0.1") == 61235


def test_a_reservation_older_than_an_hour_is_stale(monkeypatch, reservations):
    import os
    import time

    reservations.mkdir()
    old = reservations / "61300"
    old.touch()
    os.utime(old, (time.time() - ports.RESERVATION_S - 5,) * 2)
    monkeypatch.setattr(ports.random, "SystemRandom", lambda: type("D", (), {"randint": lambda *_: 61300})())
    monkeypatch.setattr(ports, "draw_window", lambda: (61000, 65535))
    assert ports.rendezvous_port("127.0.0.1") == 61300
