"""w2s.ports: rendezvous ports come from below the kernel's ephemeral range, and only free ones."""

from __future__ import annotations

import socket

from w2s import ports


def test_a_rendezvous_port_lies_below_the_ephemeral_range_and_can_be_listened_on():
    low, _ = ports.ephemeral_range()
    chosen = {ports.rendezvous_port("127.0.0.1") for _ in range(20)}
    assert all(ports.LOWEST <= p < low for p in chosen), chosen
    assert len(chosen) > 1  # drawn, not one fixed port that every process would collide on
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", chosen.pop()))
        sock.listen()


def test_a_port_something_listens_on_is_passed_over(monkeypatch):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        draws = iter([taken, taken, ports.LOWEST + 7])

        class Draws:
            def randrange(self, low: int, high: int) -> int:
                return next(draws)

        monkeypatch.setattr(ports.random, "SystemRandom", Draws)
        monkeypatch.setattr(ports, "ephemeral_range", lambda: (65000, 65535))  # so that `taken` counts as a draw
        assert ports.rendezvous_port("127.0.0.1") == ports.LOWEST + 7


def test_the_kernel_chooses_where_the_ephemeral_range_leaves_no_room_below_it(tmp_path, monkeypatch):
    setting = tmp_path / "ip_local_port_range"
    setting.write_text(f"{ports.LOWEST + 10}\t60999\n")
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE_FILE", setting)
    assert ports.ephemeral_range() == (ports.LOWEST + 10, 60999)
    assert ports.rendezvous_port("127.0.0.1") >= ports.LOWEST + 10  # where the kernel hands out its own

    monkeypatch.setattr(ports, "EPHEMERAL_RANGE_FILE", tmp_path / "absent")
    assert ports.ephemeral_range() == ports.LINUX_DEFAULT_EPHEMERAL
