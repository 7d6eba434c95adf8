# SPDX-License-Identifier: Apache-2.0
"""A hostile local user of the watch socket, for the benchmarks: the soak
(bench/soak.py) and the propagation figure under attack (bench/run.py
--abuse). Every local user can reach the socket; this one holds a flood of
idle connections and sends malformed, oversized and half-written requests."""
from __future__ import annotations

import os
import pwd
import random
import socket
import time
from pathlib import Path


def abuser(sock: Path, stop_at: float, idle_conns: int, seed: int, counts) -> None:
    """As nobody: idle connections held and replaced, and malformed requests.

    Runs in a process of its own (it drops to nobody), until stop_at (time.time());
    puts its counts on the counts queue when done."""
    nobody = pwd.getpwnam("nobody")
    os.setgroups([])
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)
    rng = random.Random(seed)
    held: list[socket.socket] = []
    stats = {"connections": 0, "refused": 0, "malformed": 0}
    bad = [b"\n", b"{}\n", b"[]\n", b"null\n", b"{\"op\":1}\n", b"{\"op\":\"nope\"}\n",
           b"{\"op\":\"stats\"}\n", b"{\"op\":\"wait\",\"tag\":\"x\"}\n",
           b"{\"op\":\"wait\",\"tag\":7}\n", b"{\"op\":\"wait\"}\n", b"\xff\xfe\x00\n",
           b"{\"op\":\"watch\"" + b" " * 5000 + b"}\n", b"{" * 3000 + b"\n", b"x" * 70000]

    def connect():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(0.5)
        try:
            s.connect(str(sock))
            stats["connections"] += 1
            return s
        except OSError:
            stats["refused"] += 1
            s.close()
            return None

    while time.time() < stop_at:
        # Top up the idle flood, then replace a tenth of it.
        while len(held) < idle_conns:
            s = connect()
            if s is None:
                break
            held.append(s)
        for s in held[: max(1, idle_conns // 10)]:
            s.close()
        del held[: max(1, idle_conns // 10)]
        # A burst of malformed requests, some half-written and abandoned.
        for _ in range(20):
            s = connect()
            if s is None:
                continue
            try:
                msg = rng.choice(bad)
                if rng.random() < 0.3:
                    msg = msg[: rng.randrange(len(msg))]  # no newline: never finished
                s.sendall(msg)
                stats["malformed"] += 1
                if rng.random() < 0.5:
                    s.recv(4096)
            except OSError:
                pass
            s.close()
        time.sleep(0.2)
    for s in held:
        s.close()
    counts.put(stats)
