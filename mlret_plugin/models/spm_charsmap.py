"""A SentencePiece ``precompiled_charsmap`` built from a codepoint -> replacement table.

The blob ``tokenizers.normalizers.Precompiled`` reads: u32 trie size in bytes, a darts-clone double-array
trie over the keys' UTF-8 bytes (values: byte offsets into the string pool), then the pool of
NUL-terminated replacement strings. It gives a table of thousands of rules one fast trie lookup per
character, where one ``Replace`` normaliser per rule would rescan the text thousands of times.

darts-clone unit (32 bits): label in bits 0-7 (bit 31 set marks a value unit, which no byte matches),
has-leaf flag bit 8, offset to the children's base in bits 10-31 (XOR addressing: the child with byte
``c`` of a node at ``pos`` lives at ``pos ^ offset ^ c``, its value unit at ``pos ^ offset``).
"""
from __future__ import annotations

import struct

LEAF_BIT = 1 << 31
HAS_LEAF = 1 << 8
MAX_OFFSET = 1 << 21  # offsets above need darts-clone's extended (x256) encoding, not needed for small tables


def _trie(keys: dict[bytes, int]) -> list[dict]:
    """Nodes as {"children": {byte: node index}, "value": int | None}; node 0 is the root."""
    nodes: list[dict] = [{"children": {}, "value": None}]
    for key, value in keys.items():
        if not key or 0 in key:
            raise ValueError(f"charsmap key {key!r}: keys must be non-empty and contain no NUL byte")
        node = 0
        for byte in key:
            child = nodes[node]["children"].get(byte)
            if child is None:
                child = len(nodes)
                nodes.append({"children": {}, "value": None})
                nodes[node]["children"][byte] = child
            node = child
        nodes[node]["value"] = value
    return nodes


def double_array(keys: dict[bytes, int]) -> list[int]:
    """darts-clone units for ``keys`` (byte string -> value < 2**31); exact-key lookups only."""
    nodes = _trie(keys)
    units: dict[int, int] = {}
    used_bases: set[int] = set()
    position = {0: 0}
    queue = [0]
    first_free = 1
    wide_from = 1  # where the last node with several labels was placed: a cheap, monotone start for the next
    for node_id in queue:  # breadth first; queue grows while iterating
        node = nodes[node_id]
        labels = sorted(node["children"]) + ([0] if node["value"] is not None else [])
        if not labels:
            continue
        while first_free in units or first_free in used_bases:  # first slot usable as a leaf-only base
            first_free += 1
        # try bases that put the first label on a free slot; a base serves one parent only, so a slot's
        # label identifies its parent (darts-clone's rule)
        slot = first_free if len(labels) == 1 else max(first_free, wide_from)
        while True:
            base = slot ^ labels[0]
            if base not in used_bases and all((base ^ lab) not in units and (base ^ lab) != 0 for lab in labels):
                break
            slot += 1
        used_bases.add(base)
        if len(labels) > 1:
            wide_from = slot
        pos = position[node_id]
        offset = pos ^ base
        if offset >= MAX_OFFSET:
            raise ValueError("charsmap trie too large for the plain darts-clone offset encoding")
        units[pos] = (units.get(pos, 0) & 0xFF) | (offset << 10) | (HAS_LEAF if node["value"] is not None else 0)
        for byte, child in node["children"].items():
            units[base ^ byte] = byte
            position[child] = base ^ byte
            queue.append(child)
        if node["value"] is not None:
            if not 0 <= node["value"] < LEAF_BIT:
                raise ValueError(f"charsmap value {node['value']} does not fit in 31 bits")
            units[base] = LEAF_BIT | node["value"]
    # Lookups jump to base ^ byte for any byte, unchecked (tokenizers indexes the array directly): every
    # base's 256-slot block must exist, as in darts-clone, whose arrays are whole blocks.
    size = (max(max(units), max(used_bases)) // 256 + 1) * 256
    return [units.get(i, 0) for i in range(size)]


def precompiled_charsmap(table: dict[int, tuple[int, ...]]) -> bytes:
    """The charsmap mapping each codepoint of ``table`` to its replacement codepoints (possibly none)."""
    pool = bytearray()
    where: dict[tuple[int, ...], int] = {}
    keys: dict[bytes, int] = {}
    for cp, out in sorted(table.items()):
        if out not in where:
            where[out] = len(pool)
            pool += "".join(map(chr, out)).encode("utf-8") + b"\0"
        keys[chr(cp).encode("utf-8")] = where[out]
    units = double_array(keys)
    return struct.pack("<I", 4 * len(units)) + struct.pack(f"<{len(units)}I", *units) + bytes(pool)
