"""The dev server is ready when its frontend answers, and a taken port is retried elsewhere."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from reverie.starter.temporal_dev import TemporalDevServer, free_port, frontend_answers


@pytest.fixture
def squatter() -> Iterator[int]:
    """A port on which something that is not Temporal accepts connections: what a readiness
    check that only connects would take for a ready server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def test_a_socket_that_accepts_is_not_a_ready_frontend(squatter: int) -> None:
    assert not frontend_answers(f"127.0.0.1:{squatter}")


def test_fixed_ports_that_are_taken_fail_clearly(squatter: int, tmp_path: Path) -> None:
    server = TemporalDevServer(
        db_file=None, port=squatter, ui_port=None, log_file=tmp_path / "t.log"
    )
    try:
        with pytest.raises((RuntimeError, TimeoutError), match=str(squatter)):
            server.start(timeout=20)
    finally:
        server.stop()


def test_chosen_ports_that_turn_out_taken_are_retried_on_new_ones(
    squatter: int, tmp_path: Path
) -> None:
    server = TemporalDevServer(
        db_file=None,
        port=squatter,
        ui_port=free_port(),
        log_file=tmp_path / "t.log",
        choose_ports=True,
    )
    try:
        server.start(timeout=20)
        assert server.port != squatter
        assert frontend_answers(server.address)
    finally:
        server.stop()
