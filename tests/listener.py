"""A TCP server on the host's loopback that counts the connections it accepts."""

from __future__ import annotations

import socket
import threading


class Listener:
    """Accepts and counts connections until closed (sandboxed code must never reach it)."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.running:
            try:
                connection, _ = self.server.accept()
                self.connections += 1
                connection.close()
            except OSError:
                continue

    def close(self):
        self.running = False
        self.thread.join()
        self.server.close()
