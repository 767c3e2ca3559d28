"""A TCP proxy that breaks one sync request on purpose: it cuts the request
before the server sees it, loses the server's response, or kills the server,
the first time a request for a given endpoint passes."""

from __future__ import annotations

import socket
import threading


class Breaker:
    def __init__(self, target_port: int, endpoint: str, mode: str, on_kill=None):
        assert mode in ("cut", "lose_response", "kill")
        self.target_port = target_port
        self.trigger = f"/sync/{endpoint} ".encode()
        self.mode = mode
        self.on_kill = on_kill
        self.fired = threading.Event()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket):
        try:
            server = socket.create_connection(("127.0.0.1", self.target_port))
            if server.getsockname() == server.getpeername():
                # While the server is down, a connect to its (ephemeral) port
                # can pick that same port as its source and connect to
                # itself, squatting the port the server restarts on.
                server.close()
                raise OSError("connected to itself")
        except OSError:
            client.close()
            return
        lose = threading.Event()

        def upstream():
            try:
                while data := client.recv(65536):
                    if not self.fired.is_set() and self.trigger in data:
                        self.fired.set()
                        if self.mode == "cut":
                            break
                        if self.mode == "kill":
                            self.on_kill()
                            break
                        lose.set()
                    server.sendall(data)
            except OSError:
                pass
            if not lose.is_set():
                for s in (client, server):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        def downstream():
            try:
                while data := server.recv(65536):
                    if lose.is_set():
                        break  # the response never reaches the client
                    client.sendall(data)
            except OSError:
                pass
            for s in (client, server):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        threading.Thread(target=upstream, daemon=True).start()
        downstream()
        client.close()
        server.close()

    def close(self):
        self.listener.close()
