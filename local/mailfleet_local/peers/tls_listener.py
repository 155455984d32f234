"""The accept loop the TLS doubles (proxy, appliance) share: listen on 127.0.0.1, one
thread a connection, the handshake, then the double's own `serve`; a connection that
fails or hangs up in any of that is closed quietly, as a server does."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self

# serve(connection, client address): one connection, read and answered by the double.
Serve = Callable[[ssl.SSLSocket, str], None]


class StartedInWith:
    """`with double:` starts a test double and stops it on the way out."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class TlsListener:
    def __init__(self, name: str, context: Callable[[], ssl.SSLContext], serve: Serve, *,
                 io_timeout: float = 10.0, backlog: int = 128) -> None:
        self._name = name
        # Asked for on each connection: a double may change its certificate while up.
        self._context = context
        self._serve = serve
        self._io_timeout = io_timeout
        self._backlog = backlog
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None

    @property
    def listening(self) -> bool:
        return self._listener is not None

    def listen(self, port: int = 0) -> int:
        """Start accepting on 127.0.0.1:`port` (0: any free port); the port."""
        listener = socket.create_server(("127.0.0.1", port), backlog=self._backlog)
        port = listener.getsockname()[1]
        self._listener = listener
        self._accepting = threading.Thread(target=self._accept_loop, args=(listener,),
                                           name=f"{self._name}-{port}", daemon=True)
        self._accepting.start()
        return int(port)

    def close(self) -> None:
        """Refuse new connections (those being served go on); idempotent."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        # shutdown wakes the blocked accept(); close alone does not on Linux
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()

    def join(self, timeout: float = 2.0) -> None:
        """Wait for the accept loop to end (after close)."""
        accepting, self._accepting = self._accepting, None
        if accepting is not None and accepting is not threading.current_thread():
            accepting.join(timeout)

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                raw, address = listener.accept()
            except OSError:
                return  # closed
            if self._listener is not listener:  # closed while this one came in
                raw.close()
                return
            threading.Thread(target=self._connection, args=(raw, address[0]),
                             daemon=True).start()

    def _connection(self, raw: socket.socket, client: str) -> None:
        raw.settimeout(self._io_timeout)
        try:
            conn = self._context().wrap_socket(raw, server_side=True)
        except (OSError, ValueError):
            raw.close()
            return  # handshake failed or the client hung up (e.g. a pin mismatch)
        try:
            self._serve(conn, client)
        except (OSError, ValueError):
            pass  # the client went away, or the double cut it off
        finally:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
