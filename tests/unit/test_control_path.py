"""Where the control socket goes: a directory the server makes is private; a
directory that was there (/tmp, /run) keeps the mode it had."""
from __future__ import annotations

import stat

from dataplane.control import ControlServer, request


def serve(path):
    server = ControlServer(None, path)
    server.start()
    return server


def test_a_directory_it_makes_is_private_and_so_is_the_socket(tmp_path):
    sock = tmp_path / "new" / "dp.sock"
    server = serve(sock)
    try:
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert "status" in request(sock, "help")
    finally:
        server.stop()


def test_an_existing_shared_directory_keeps_its_mode(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # as /tmp is: making it 0700 would lock every other user out
    sock = shared / "dp.sock"
    server = serve(sock)
    try:
        assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    finally:
        server.stop()
