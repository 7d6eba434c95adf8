# SPDX-License-Identifier: Apache-2.0
"""Ring-buffer pages of CXL trace events, as tracefs's trace_pipe_raw gives them.

The synthetic tracefs of the integration tests has per_cpu/cpuN/trace_pipe_raw
FIFOs; a test writes pages into them as the kernel would fill its ring
buffer, and tagmemfs decodes them by field (core/trace_decoder.hpp). Records
are laid out as an event's format file says (tests/data: the real kernels'),
so the test and the daemon read the same declaration.

A page (kernel/trace/ring_buffer.c, 64-bit little endian): u64 timestamp,
u64 commit (the data's length; bit 31: events were missed before this page,
bit 30: their count follows the data), then events: a 32-bit header
(type_len:5, time_delta:27) and the record, type_len 0 with a length word
for records over 112 bytes.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

PAGE_SIZE = 4096
HEADER = 16
MISSED_EVENTS = 1 << 31
MISSED_STORED = 1 << 30

_FIELD = re.compile(r"field:(?P<decl>[^;]*);\s*offset:(?P<off>\d+);\s*size:(?P<size>\d+);")


@dataclass
class Field:
    name: str
    offset: int
    size: int
    dynamic: bool  # a __string: its location word


class EventFormat:
    """An event's format file: its id and where each field is."""

    def __init__(self, text: str):
        self.name = re.search(r"^name: (\S+)$", text, re.M).group(1)
        self.id = int(re.search(r"^ID: (\d+)$", text, re.M).group(1))
        self.fields: dict[str, Field] = {}
        for m in _FIELD.finditer(text):
            decl = m.group("decl").strip()
            name = re.sub(r"\[.*\]$", "", decl.split()[-1])
            self.fields[name] = Field(name, int(m.group("off")), int(m.group("size")),
                                      decl.startswith("__data_loc"))
        self.size = max(f.offset + f.size for f in self.fields.values())

    @classmethod
    def load(cls, path: Path) -> "EventFormat":
        return cls(path.read_text())

    def record(self, **values) -> bytes:
        """A record: fields by name (int, bytes, or str for a __string)."""
        rec = bytearray(self.size)
        struct.pack_into("<H", rec, 0, self.id)
        tail = bytearray()
        for name, value in values.items():
            f = self.fields[name]
            if f.dynamic:
                data = value.encode() + b"\0"
                loc = (self.size + len(tail)) | (len(data) << 16)
                struct.pack_into("<I", rec, f.offset, loc)
                tail += data
            elif isinstance(value, (bytes, bytearray)):
                rec[f.offset:f.offset + f.size] = bytes(value).ljust(f.size, b"\0")[:f.size]
            else:
                rec[f.offset:f.offset + f.size] = (value % (1 << (8 * f.size))).to_bytes(
                    f.size, "little")
        return bytes(rec + tail)


def page(records: list[bytes], missed: int | None = None, lost_unknown: bool = False,
         page_size: int = PAGE_SIZE) -> bytes:
    """One page holding `records`; `missed`: events the ring buffer overwrote
    before it (stored count), `lost_unknown`: some, count not stored."""
    data = bytearray()
    for rec in records:
        length = (len(rec) + 3) & ~3
        if 0 < length <= 112:
            data += struct.pack("<I", (length // 4) | (1 << 5))
        else:
            data += struct.pack("<II", 1 << 5, length + 4)
        data += rec.ljust(length, b"\0")
    commit = len(data)
    if missed is not None:
        commit |= MISSED_EVENTS | MISSED_STORED
        data += struct.pack("<Q", missed)
    elif lost_unknown:
        commit |= MISSED_EVENTS
    if HEADER + len(data) > page_size:
        raise ValueError(f"{len(records)} records do not fit a page")
    return (struct.pack("<QQ", 1_000_000, commit) + data).ljust(page_size, b"\0")


def pages(records: list[bytes], page_size: int = PAGE_SIZE) -> list[bytes]:
    """As many pages as `records` take, in order."""
    out, batch, used = [], [], HEADER
    for rec in records:
        size = 8 + ((len(rec) + 3) & ~3)
        if batch and used + size > page_size:
            out.append(page(batch, page_size=page_size))
            batch, used = [], HEADER
        batch.append(rec)
        used += size
    if batch:
        out.append(page(batch, page_size=page_size))
    return out


POISON_TYPES = {"List": 0, "Inject": 1, "Clear": 2}
NO_HPA = (1 << 64) - 1


def poison_record(fmt: EventFormat, hpa: int | None, dpa: int, length: int = 64,
                  memdev: str = "mem0", trace_type: str = "List") -> bytes:
    """A cxl_poison record; hpa None: no region maps the DPA."""
    values = dict(memdev=memdev, host="0000:0d:00.0", serial=0,
                  trace_type=POISON_TYPES[trace_type],
                  region="region0" if hpa is not None else "",
                  hpa=hpa if hpa is not None else NO_HPA, dpa=dpa, dpa_length=length,
                  source=3, flags=0, overflow_ts=0)
    if "hpa_alias0" in fmt.fields:
        values["hpa_alias0"] = NO_HPA
    return fmt.record(**values)


DC_TYPES = {"add": 0, "release": 1, "forced_release": 2, "region_updated": 3}


def dc_record(fmt: EventFormat, event_type: str, dpa_start: int, length: int, tag: bytes,
              memdev: str = "mem0", seq: int = 0) -> bytes:
    """A cxl_dynamic_capacity record (the DCD series' event)."""
    return fmt.record(memdev=memdev, host="0000:0d:00.0", event_type=DC_TYPES[event_type],
                      dpa_start=dpa_start, length=length, uuid=tag, sh_extent_seq=seq)
