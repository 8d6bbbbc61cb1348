#!/usr/bin/env python3
"""Checks that a PNG screenshot is not blank: enough distinct colours, enough non-white pixels,
and the colours the picture must show (hex RGB given on the command line, within a tolerance,
since a browser may blend an edge). Standard library only: the PNG is inflated with zlib and
unfiltered by hand (8-bit RGB or RGBA, the screenshots Chromium writes)."""
import struct
import sys
import zlib


def pixels(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        sys.exit(f"{path}: not a PNG")
    pos, idat, width, height, depth, colour = 8, b"", 0, 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    if depth != 8 or colour not in (2, 6):
        sys.exit(f"{path}: a PNG of depth {depth}, colour type {colour} is not handled")
    bpp = 3 if colour == 2 else 4
    raw, stride, prev, rows = zlib.decompress(idat), width * bpp, bytearray(width * bpp), []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        prev = line
    return [tuple(row[x * bpp : x * bpp + 3]) for row in rows for x in range(width)]


def main():
    path, wanted = sys.argv[1], [bytes.fromhex(h.lstrip("#")) for h in sys.argv[2:]]
    px = pixels(path)
    distinct = set(px)
    inked = sum(1 for p in px if p != (255, 255, 255)) / len(px)
    missing = [
        w.hex()
        for w in wanted
        if not any(all(abs(p[i] - w[i]) <= 6 for i in range(3)) for p in distinct)
    ]
    print(f"{path}: {len(distinct)} colours, {inked:.1%} not white, missing {missing or 'none'}")
    if len(distinct) < 8 or inked < 0.02 or missing:
        sys.exit(f"{path}: the picture looks blank or incomplete")


main()
