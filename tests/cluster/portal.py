"""The portal's two parts a browser meets (the job card and OOD's /node/HOST/PORT/ proxy), run
as a process on the cluster's login host, where a real portal runs: the proxy resolves HOST with
login's own resolver and connects to it over the cluster's network.

    python portal.py CARD_HTML_FILE HOST PORT

prints the portal's URL, then each path it forwards, and serves until killed.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), os.path.join(os.path.dirname(HERE), "e2e")]

from test_ondemand import MiniOOD  # noqa: E402 - the same proxy the one-host test uses


class _Printed(list):
    """The paths the proxy forwarded, one per line on stdout as they come."""

    def append(self, path: str) -> None:
        super().append(path)
        print(f"forwarded {path}", flush=True)


class NodeProxy(MiniOOD):
    """MiniOOD, forwarding /node/HOST/PORT/ to HOST:PORT itself (not to loopback)."""

    def __init__(self, card: str, host: str, port: int) -> None:
        super().__init__(card, host, port)
        self.upstream = (host, port)
        self.forwarded = _Printed()


def main() -> None:
    card_file, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(card_file, encoding="utf-8") as fh:
        server = NodeProxy(fh.read(), host, port)
    print(server.url, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
