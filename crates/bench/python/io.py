"""Python's echo servers for `make bench`'s `io` suite (the io-models demo).

  python3 io.py --server tcpserver    socketserver.TCPServer: one client at a time
  python3 io.py --server threading    socketserver.ThreadingTCPServer: a thread per client
  python3 io.py --server asyncio      an asyncio streams server (asyncio.start_server)

Each is a line echo (a line in, the same line out, bytes unchanged), binds 127.0.0.1 on a port
the kernel picks, prints one JSON object {"python": "3.11.7", "port": P, "pid": N} as its first
line, and serves until it is terminated. The benchmark drives it with the same load client as
the Rust servers (loopback only) and reads its CPU time in /proc.
"""

import argparse
import asyncio
import json
import os
import signal
import socket
import socketserver
import sys

MAX_LINE = 65536 + 1


class EchoHandler(socketserver.StreamRequestHandler):
    # The notes' socketserver: handle() runs once per connection.
    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self):
        while True:
            line = self.rfile.readline(MAX_LINE)
            if not line:
                return
            self.wfile.write(line)
            self.wfile.flush()


class Serial(socketserver.TCPServer):
    allow_reuse_address = True
    request_queue_size = 1024


class Threading(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 1024


def announce(port):
    print(json.dumps({"python": sys.version.split()[0], "port": port, "pid": os.getpid()}),
          flush=True)


def serve_socketserver(cls):
    server = cls(("127.0.0.1", 0), EchoHandler)
    announce(server.server_address[1])
    server.serve_forever()


async def asyncio_main():
    async def handle(reader, writer):
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                writer.write(line)
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=MAX_LINE, backlog=1024)
    announce(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", choices=["tcpserver", "threading", "asyncio"], required=True)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if args.server == "tcpserver":
        serve_socketserver(Serial)
    elif args.server == "threading":
        serve_socketserver(Threading)
    else:
        asyncio.run(asyncio_main())


if __name__ == "__main__":
    main()
