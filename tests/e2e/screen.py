#!/usr/bin/env python3
"""Looks at the screen of an Xvfb started with -fbdir (its XWD dump, always current) for the tray
app's end-to-end run (ui/e2e/run.mjs), under the real panel tests/e2e/tray.sh starts (a
StatusNotifierItem host at the top of the screen, the tray alone in it). Prints JSON.

  screen.py panel OUT.png   the panel strip as PNG; the tray icon's box and a digest of its pixels
  screen.py menu OUT.png X Y W H
                            the top left of the screen with the open menu (its window at X Y W H)
                            as PNG; the vertical centre of each item (rows of text, in order)
  screen.py window OUT.png X Y W H
                            the rectangle at X Y W H (a window, as WebDriver gives its place)
  screen.py png OUT.png     the whole screen

The dump's path is in E2E_SCREEN. Only the 32-bit TrueColor dumps Xvfb writes are read."""
import hashlib
import json
import os
import struct
import sys
import zlib

PANEL = 34  # the panel's size (tests/e2e/xfce4-panel.xml) and its border


def read_xwd(path, most=None):
    b = open(path, "rb").read()
    h = struct.unpack(">25I", b[:100])
    size, bpp, bpl, ncolors = h[0], h[11], h[12], h[19]
    w, hgt, order = h[4], h[5], h[7]
    full = hgt
    hgt = min(hgt, most or hgt)
    if bpp != 32:
        raise SystemExit(f"xwd2png: {bpp} bits per pixel not handled (Xvfb -screen WxHx24 writes 32)")
    off = size + 12 * ncolors
    # LSBFirst stores B G R X, MSBFirst X R G B: where R, G and B sit in each 4-byte pixel.
    r, g, bl = (2, 1, 0) if order == 0 else (1, 2, 3)
    rows = []
    for y in range(hgt):
        line = b[off + y * bpl: off + y * bpl + 4 * w]
        rgb = bytearray(3 * w)
        rgb[0::3], rgb[1::3], rgb[2::3] = line[r::4], line[g::4], line[bl::4]
        rows.append(bytes(rgb))
    return w, full, rows


def write_png(path, w, h, rows):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    raw = b"".join(b"\0" + r for r in rows)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def differs(a, b, by=48):
    return sum(abs(x - y) for x, y in zip(a, b)) > by


def px(rows, x, y):
    return tuple(rows[y][3 * x: 3 * x + 3])


def panel(rows, w):
    bg = px(rows, w - 3, PANEL // 2)
    xs = [x for x in range(w - 4) for y in range(2, PANEL - 2) if differs(px(rows, x, y), bg)]
    if not xs:
        return None
    x0, x1 = min(xs), max(xs)
    ys = [y for y in range(2, PANEL - 2) for x in range(x0, x1 + 1) if differs(px(rows, x, y), bg)]
    y0, y1 = min(ys), max(ys)
    crop = b"".join(r[3 * x0: 3 * (x1 + 1)] for r in rows[y0: y1 + 1])
    return {"box": [x0, y0, x1 - x0 + 1, y1 - y0 + 1], "digest": hashlib.sha256(crop).hexdigest()[:16]}


def menu(rows, box):
    """Items of the menu window at BOX (x, y, w, h; xdotool finds the window): rows of text,
    pixels far from the menu's own background (its most common colour; a separator is close to
    it), grouped where rows of text are at most 4 pixels apart."""
    from collections import Counter
    x0, y0, w, h = box
    bg = Counter(px(rows, x, y) for y in range(y0, y0 + h, 2) for x in range(x0, x0 + w, 3)).most_common(1)[0][0]
    text = [y for y in range(y0 + 2, y0 + h - 2)
            if any(differs(px(rows, x, y), bg, 150) for x in range(x0 + 4, x0 + w - 4))]
    items, start, last = [], None, None
    for y in text:
        if start is None:
            start = last = y
        elif y - last > 4:
            items.append((start + last) // 2)
            start = y
        last = y
    if start is not None:
        items.append((start + last) // 2)
    return {"box": list(box), "items": items, "x": x0 + w // 3}


if __name__ == "__main__":
    what, out = sys.argv[1], sys.argv[2]
    w, h, rows = read_xwd(os.environ["E2E_SCREEN"], PANEL if what == "panel" else None)
    if what == "panel":
        write_png(out, w, PANEL, [r for r in rows[:PANEL]])
        print(json.dumps(panel(rows, w)))
    elif what == "menu":
        box = [int(v) for v in sys.argv[3:7]]
        m = menu(rows, box)
        bottom = min(h, box[1] + box[3] + 8)
        right = min(w, box[0] + box[2] + 200)
        write_png(out, right, bottom, [r[: 3 * right] for r in rows[:bottom]])
        print(json.dumps(m))
    elif what == "window":
        x, y, ww, wh = [int(float(v)) for v in sys.argv[3:7]]
        x, y = max(0, x), max(0, y)
        ww, wh = min(ww, w - x), min(wh, h - y)
        write_png(out, ww, wh, [r[3 * x: 3 * (x + ww)] for r in rows[y: y + wh]])
        print("{}")
    elif what == "png":
        write_png(out, w, h, rows)
        print("{}")
    else:
        raise SystemExit(f"screen.py: unknown {what}")
