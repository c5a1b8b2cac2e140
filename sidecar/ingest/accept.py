"""Our own accept() loop for a listening socket, shared by the Unix and HTTP listeners.

The event loop's built-in servers hide a failing accept(): out of file descriptors (EMFILE),
the stdlib loop logs and retries a second later, and libuv (uvloop) accepts and closes the
connection at once, so the client's first write "succeeds" and its events are lost without a
counter. Here each failure is counted and logged (at most once per LOG_EVERY seconds), and the
connection stays in the kernel's backlog, accepted as soon as a descriptor is free. Accepting
can also wait (`wait_for_room`), leaving new clients in the backlog instead of refusing them.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("agent_sidecar.accept")

RETRY_AFTER = 0.1  # seconds between accept() attempts while out of descriptors
LOG_EVERY = 10.0
RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


async def accept_forever(
    sock: socket.socket,
    name: str,
    handle: Callable[[socket.socket], None],
    on_error: Callable[[str], None],
    wait_for_room: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Accept on the non-blocking listening `sock` until cancelled, handing each connection to
    `handle`; `on_error(errno_name)` counts each accept() that failed for lack of resources."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    last_logged = 0.0
    while True:
        if wait_for_room is not None:
            await wait_for_room()
        try:
            conn, _ = await loop.sock_accept(sock)
        except OSError as exc:
            if exc.errno in RESOURCE_ERRORS:
                code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                on_error(code)
                if time.monotonic() - last_logged >= LOG_EVERY:
                    last_logged = time.monotonic()
                    log.error(
                        "%s: accept() failed with %s (%s): new clients wait in the backlog; "
                        "raise `ulimit -n` or lower ingest.max_connections / ingest.max_http_connections",
                        name, code, exc.strerror,
                    )
                await asyncio.sleep(RETRY_AFTER)
                continue
            if exc.errno in (errno.ECONNABORTED, errno.EAGAIN, errno.EINTR, errno.EPROTO):
                continue  # the client gave up before we accepted it; nothing to refuse
            raise
        conn.setblocking(False)
        handle(conn)
