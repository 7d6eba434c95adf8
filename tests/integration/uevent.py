# SPDX-License-Identifier: Apache-2.0
"""Sends device events the way udevd does, so that tagmemfs's real libudev
monitor (--uevents=udev) receives them on a synthetic host.

udevd multicasts "libudev" messages to netlink group 2 of the
NETLINK_KOBJECT_UEVENT family; libudev accepts them from uid 0 and filters by
a MurmurHash2 of the subsystem in the header. Run only inside a private
network namespace (ctest starts these tests with `unshare --net`), so that no
real listener on the machine hears the fake events.
"""
from __future__ import annotations

import os
import socket
import struct

UDEV_GROUP = 2
NETLINK_KOBJECT_UEVENT = 15  # linux/netlink.h (not exported by Python)
_MAGIC = 0xFEEDCAFE
_HEADER = struct.Struct("=8sIIIIIIII")  # prefix, magic, header_size, props off/len, hashes


def murmur2(data: bytes, seed: int = 0) -> int:
    """systemd's string_hash32()."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    h = (seed ^ len(data)) & mask
    i = 0
    while len(data) - i >= 4:
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
        i += 4
    rest = data[i:]
    if len(rest) == 3:
        h ^= rest[2] << 16
    if len(rest) >= 2:
        h ^= rest[1] << 8
    if len(rest) >= 1:
        h ^= rest[0]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h


class UdevSender:
    def __init__(self):
        net = os.readlink("/proc/self/ns/net")
        parent = os.readlink(f"/proc/{os.getppid()}/ns/net")
        if net == parent and not os.environ.get("TAGMEM_ALLOW_UEVENT_INJECTION"):
            raise RuntimeError("refusing to send fake udev events outside a private network "
                               "namespace")
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW,
                                  NETLINK_KOBJECT_UEVENT)
        self.sock.bind((0, 0))
        self.seqnum = 1000

    def send(self, action: str, devpath: str, subsystem: str, **props: str) -> None:
        """devpath as the kernel gives it: relative to /sys, starting with /devices."""
        self.seqnum += 1
        pairs = {"ACTION": action, "DEVPATH": devpath, "SUBSYSTEM": subsystem,
                 "SEQNUM": str(self.seqnum), **props}
        body = b"".join(f"{k}={v}".encode() + b"\0" for k, v in pairs.items())
        header = _HEADER.pack(b"libudev\0", socket.htonl(_MAGIC), _HEADER.size, _HEADER.size,
                              len(body), socket.htonl(murmur2(subsystem.encode())), 0, 0, 0)
        self.sock.sendto(header + body, (0, UDEV_GROUP))

    def close(self) -> None:
        self.sock.close()
