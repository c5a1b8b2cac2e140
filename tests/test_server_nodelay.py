import socket

from sidecar.server import bind_http


def test_http_socket_is_tcp_so_asyncio_turns_off_nagle_on_each_connection():
    sock = bind_http("127.0.0.1:0")
    try:
        assert sock.proto == socket.IPPROTO_TCP
        client = socket.create_connection(sock.getsockname())
        conn, _ = sock.accept()
        assert conn.proto == socket.IPPROTO_TCP  # what asyncio's _set_nodelay checks
        conn.close()
        client.close()
    finally:
        sock.close()
