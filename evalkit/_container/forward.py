"""In-sandbox forwarder: TCP on the container's loopback -> the gateway's Unix socket.

The agent's container has no network (``network_mode=none``); its only way to a model is
the host gateway's Unix socket, bind-mounted read-only. Agent CLIs speak HTTP over TCP,
so this script listens on ``127.0.0.1:PORT`` and pipes every connection, byte for byte,
to the socket. It understands nothing about HTTP: the gateway on the host decides what
passes, so nothing here needs to be trusted.

Runs as the agent's uid on whatever ``python3`` the image has: standard library only,
Python 3.7 compatible. Usage::

    python3 forward.py --listen 127.0.0.1:4000 --socket /evalkit/gateway/model.sock \
        [--ready-file /tmp/evalkit/forward.ready]

Once listening it prints ``ready HOST:PORT`` on stdout (and writes the same line to
``--ready-file`` if given, atomically), so the runner knows when to start the agent.
"""

import argparse
import contextlib
import os
import socket
import sys
import threading

CHUNK = 64 * 1024
BACKLOG = 128


def parse_listen(text):
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError("--listen wants HOST:PORT, got %r" % text)
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError("--listen port is not a number: %r" % text) from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError("--listen port out of range: %r" % text)
    return host, number


def pump(src, dst, done):
    """Copy src -> dst until EOF, then half-close dst so the peer sees the end too."""
    try:
        while True:
            data = src.recv(CHUNK)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
        done()


def serve_connection(client, socket_path):
    try:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(socket_path)
    except OSError as exc:
        sys.stderr.write("forward: cannot reach %s: %s\n" % (socket_path, exc))
        client.close()
        return
    remaining = [2]
    lock = threading.Lock()

    def done():
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            client.close()
            upstream.close()

    for src, dst in ((client, upstream), (upstream, client)):
        thread = threading.Thread(target=pump, args=(src, dst, done))
        thread.daemon = True
        thread.start()


def write_ready(path, line):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as handle:
        handle.write(line + "\n")
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=parse_listen, default=("127.0.0.1", 4000))
    parser.add_argument("--socket", required=True, help="the gateway's Unix socket")
    parser.add_argument("--ready-file", help="written once listening")
    args = parser.parse_args(argv)

    host, port = args.listen
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
        listener.listen(BACKLOG)
    except OSError as exc:
        sys.stderr.write("forward: cannot listen on %s:%d: %s\n" % (host, port, exc))
        return 1
    bound_host, bound_port = listener.getsockname()[:2]
    line = "ready %s:%d" % (bound_host, bound_port)
    if args.ready_file:
        write_ready(args.ready_file, line)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()

    while True:
        try:
            client, _ = listener.accept()
        except KeyboardInterrupt:
            return 0
        except OSError:
            continue
        serve_connection(client, args.socket)


if __name__ == "__main__":
    sys.exit(main())
