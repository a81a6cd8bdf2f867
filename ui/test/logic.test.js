import { describe as d, expect, test } from "vitest";
import {
  actionsFor,
  actionsForSelection,
  applyProgress,
  applyStates,
  cacheApply,
  cachePut,
  cacheRow,
  cacheTouch,
  isSelected,
  pageCache,
  pagesFor,
  pagesToFetch,
  parentOf,
  scrollToRow,
  selectedAmong,
  selectedCount,
  selection,
  setSelected,
  viewportRows,
  visibleRange,
  checkFolder,
  describe,
  errorText,
  formatBytes,
  formatEta,
  needsSignIn,
  problem,
  sizeText,
  overall,
  recognizeServer,
  s3Url,
  ariaSort,
  displayName,
  fileType,
  formatDate,
  homeRelative,
  nextSort,
  rangeOf,
  selectAll,
  storage,
  totalRate,
  transferRate,
  transferText,
} from "../public/src/logic.js";

d("file states", () => {
  test("each state has an icon and words", () => {
    expect(describe({ kind: "file", state: "online-only", sync: "synced" }).words).toBe("Online-only");
    expect(describe({ kind: "file", state: "partial", sync: "synced", percent: 42.7 })).toMatchObject({
      icon: "cloud-half",
      detail: "42 %",
    });
    expect(describe({ kind: "file", state: "pinned", sync: "synced" }).icon).toBe("check-solid");
    expect(describe({ kind: "file", state: "local", sync: "pending" }).words).toBe("Waiting to sync");
    expect(describe({ kind: "file", state: "local", sync: "conflict" }).icon).toBe("conflict");
  });
  test("folders summarise their files", () => {
    const r = describe({ kind: "dir", setting: "pinned", counts: { pinned: 3, online_only: 2 } });
    expect(r.icon).toBe("check-solid");
    expect(r.detail).toBe("3 always here, 2 online-only");
    expect(describe({ kind: "dir", counts: {} }).detail).toBe("empty");
  });
});

d("formatting", () => {
  test("bytes, rates and time left", () => {
    expect(formatBytes(999)).toBe("999 B");
    expect(formatBytes(1500)).toBe("1.5 KB");
    expect(formatBytes(25_000_000)).toBe("25 MB");
    expect(formatBytes(-1)).toBe("?");
    expect(formatEta(5.2)).toBe("6 s");
    expect(formatEta(600)).toBe("10 min");
    expect(formatEta(3900)).toBe("1 h 5 min");
    expect(formatEta(NaN)).toBeNull();
    expect(sizeText(3 * 2 ** 20)).toBe("3M");
    expect(sizeText(1.5 * 2 ** 30)).toBe("1.5G");
    expect(sizeText(17)).toBe("17");
  });
  test("progress gives a rate and time left", () => {
    let t = applyProgress({}, { path: "/c/a", direction: "down", done: 0, total: 1000, pid: 7, app: "cat" }, 0);
    expect(t["/c/a"].rate).toBeNull(); // one sample: unknown, never "0 B/s"
    expect(transferText(t["/c/a"], 0)).toBe("0 B of 1.0 KB · starting…");
    t = applyProgress(t, { path: "/c/a", direction: "down", done: 500, total: 1000 }, 1000);
    expect(t["/c/a"].rate).toBe(500);
    expect(t["/c/a"].eta).toBe("1 s");
    expect(t["/c/a"].finished).toBe(false);
    expect(t["/c/a"].app).toBe("cat"); // kept from the first event
    t = applyProgress(t, { path: "/c/a", direction: "down", done: 1000, total: 1000 }, 2000);
    expect(t["/c/a"].finished).toBe(true);
  });
  test("the rate is a moving average: a wait in the queue does not drag it to zero, a stall shows", () => {
    const M = 1_000_000;
    let t = applyProgress({}, { path: "/c/b", direction: "down", done: 0, total: 100 * M }, 0);
    t = applyProgress(t, { path: "/c/b", direction: "down", done: 0, total: 100 * M }, 20_000); // queued 20 s
    for (let i = 1; i <= 10; i++)
      t = applyProgress(t, { path: "/c/b", direction: "down", done: i * M, total: 100 * M }, 20_000 + i * 1000);
    const x = t["/c/b"];
    expect(transferRate(x, 30_000)).toBe(M); // 1 MB/s, not 10 MB over 30 s
    expect(x.samples.length).toBeLessThanOrEqual(7); // only the window is kept
    expect(transferText(x, 30_000)).toBe("10 MB of 100 MB · 1.0 MB/s · 2 min left");
    expect(transferRate(x, 40_000)).toBe(0); // nothing for 10 s
    expect(transferText(x, 40_000)).toBe("10 MB of 100 MB · stalled");
    expect(totalRate(t, 30_000)).toEqual({ rate: M, eta: "2 min" });
    expect(totalRate({}, 0)).toBeNull();
  });
  test("paths as people read them", () => {
    expect(homeRelative("/home/ann/Cloud", "/home/ann")).toBe("~/Cloud");
    expect(homeRelative("/home/ann", "/home/ann/")).toBe("~");
    expect(homeRelative("/home/annex/Cloud", "/home/ann")).toBe("/home/annex/Cloud");
    expect(homeRelative("/srv/Cloud", "")).toBe("/srv/Cloud");
    expect(displayName("/home/ann/Cloud/")).toBe("Cloud");
  });
  test("dates: today, yesterday, this year, other years", () => {
    const now = new Date(2026, 5, 15, 12, 0).getTime();
    const at = (...a) => new Date(...a).getTime() / 1000;
    expect(formatDate(at(2026, 5, 15, 9, 5), now, "en-GB")).toBe("Today 09:05");
    expect(formatDate(at(2026, 5, 14, 23, 59), now, "en-GB")).toBe("Yesterday 23:59");
    expect(formatDate(at(2026, 2, 3), now, "en-GB")).toBe("3 Mar");
    expect(formatDate(at(2023, 2, 3), now, "en-GB")).toBe("3 Mar 2023");
    expect(formatDate(undefined, now)).toBe("");
  });
});

d("overall state", () => {
  const root = { signed_in: true, paused: false, state: "up-to-date" };
  test("in order of what matters", () => {
    expect(overall({ connected: false }).icon).toBe("error");
    expect(overall({ connected: true, roots: [] }).icon).toBe("idle");
    expect(overall({ connected: true, roots: [{ ...root, signed_in: false, state: "needs-sign-in" }] }).icon).toBe(
      "signin",
    );
    expect(overall({ connected: true, roots: [{ ...root, paused: true, state: "paused" }] }).icon).toBe("paused");
    expect(
      overall({ connected: true, roots: [{ ...root, state: "offline", last_error: "server unreachable; ..." }] }).icon,
    ).toBe("offline");
    expect(
      overall({ connected: true, roots: [root], transfers: { a: { finished: false }, b: { finished: false } } })
        .tooltip,
    ).toBe("Skyfill: syncing 2 files");
    expect(overall({ connected: true, roots: [{ ...root, state: "syncing" }] }).tooltip).toBe("Skyfill: syncing");
    expect(overall({ connected: true, roots: [{ ...root, state: "error", last_error: "HTTP 500" }] })).toEqual({
      icon: "error",
      tooltip: "Skyfill: HTTP 500",
    });
    expect(overall({ connected: true, roots: [root] }).tooltip).toBe("Skyfill: up to date");
  });
  test("the daemon decides each root's state, not the error text", () => {
    // An error mentioning "unreachable" is shown, not read: the daemon says error.
    const failing = { ...root, state: "error", last_error: "server unreachable; retrying" };
    expect(overall({ connected: true, roots: [failing] }).icon).toBe("error");
    // Text without the daemon's word changes nothing.
    expect(overall({ connected: true, roots: [{ ...root, last_error: "server unreachable" }] }).icon).toBe("ok");
    // A root the daemon says needs sign-in, even if it still holds a secret.
    expect(needsSignIn({ ...root, state: "needs-sign-in" })).toBe(true);
    expect(needsSignIn(root)).toBe(false);
    // Paused only when every root is.
    expect(overall({ connected: true, roots: [{ ...root, state: "paused" }, root] }).icon).toBe("ok");
  });
});

d("wizard", () => {
  test("Nextcloud base URLs get the DAV path", () => {
    expect(recognizeServer("cloud.example.org", "me")).toEqual({
      kind: "webdav",
      url: "davs://cloud.example.org/remote.php/dav/files/me/",
      nextcloud: true,
    });
    expect(recognizeServer("https://x.org/nextcloud/", "a b").url).toBe(
      "davs://x.org/nextcloud/remote.php/dav/files/a%20b/",
    );
    expect(recognizeServer("https://x.org/remote.php/webdav", "me").url).toBe(
      "davs://x.org/remote.php/webdav/",
    );
    expect(recognizeServer("http://127.0.0.1:8080/dav/me", "").url).toBe("dav://127.0.0.1:8080/dav/me/");
    expect(recognizeServer("https://x.org", "").error).toMatch(/user name/);
    expect(recognizeServer("", "u").error).toBeTruthy();
    expect(recognizeServer("ftp://x", "u").error).toMatch(/http/);
  });
  test("S3 fields and the local folder", () => {
    expect(s3Url({ bucket: "photos", prefix: "/2024/" }).url).toBe("s3://photos/2024");
    expect(s3Url({ bucket: "Bad_Bucket" }).error).toBeTruthy();
    expect(checkFolder("Cloud", "/home/u")).toMatch(/full path/);
    expect(checkFolder("/home/u/../x", "/home/u")).toMatch(/\.\./);
    expect(checkFolder("/home/u", "/home/u")).toBeTruthy();
    expect(checkFolder("/home/u/Cloud", "/home/u")).toBeNull();
  });
});

d("live updates", () => {
  test("state events update one entry in place", () => {
    const e = [
      { path: "/c/a", state: "online-only", sync: "synced", size: 10, local_bytes: 0 },
      { path: "/c/b", state: "local", sync: "synced", size: 5, local_bytes: 5 },
    ];
    const ev = { path: "/c/a", state: "local", sync: "synced", size: 10, local_bytes: 10 };
    const { entries: n, matched } = applyStates(e, new Map([[ev.path, ev]]));
    expect(n[0].state).toBe("local");
    expect(n[0].percent).toBe(100);
    expect(n[1]).toBe(e[1]);
    expect([...matched]).toEqual(["/c/a"]);
    const other = { path: "/elsewhere" };
    expect(applyStates(e, new Map([[other.path, other]])).entries).toBe(e);
  });
  test("errors say what to do; actions depend on the selection", () => {
    expect(errorText("auth", "401")).toMatch(/Sign in/);
    expect(errorText("odd", "x")).toBe("x");
    // The app's own words for an unreachable or mismatched daemon already say what to do.
    const down = "The Skyfill daemon is not running. Start it with: sudo systemctl start skyfilld";
    expect(errorText("unreachable", down)).toBe(down);
    // Failed commands: {code, message} (api.js ApiError), or anything else thrown.
    expect(problem({ code: "not_a_root", message: "/x" })).toMatch(/^\/x — .*not in a Skyfill folder/);
    expect(problem({ code: "unreachable", message: down })).toBe(down);
    expect(problem(new Error("boom"))).toBe("boom");
    expect(problem("plain")).toBe("plain");
    expect(actionsFor([])).toEqual([]);
    expect(actionsFor([{ kind: "file" }])).toContain("open");
    expect(actionsFor([{ kind: "file" }, { kind: "dir" }])).toEqual(["offline", "free", "online-only"]);
  });
});

d("virtualized file list", () => {
  const ROW = 36;
  const PAGE = 200;
  const geo = (scrollTop, over = {}) => ({
    scrollTop,
    viewportHeight: 600,
    rowHeight: ROW,
    total: 100_000,
    overscan: 8,
    ...over,
  });

  test("a 600 px viewport over 100,000 rows renders only the rows in view plus overscan", () => {
    const limit = viewportRows(600, ROW) + 2 * 8; // 18 + 16
    expect(viewportRows(600, ROW)).toBe(18);
    // Every scroll position, rows aligned or not, top to bottom (and past the end).
    for (const top of [0, 1, 17, 35, 36, 1000, 1_799_982, 3_599_400, 3_600_000 - 600, 3_600_000, 9e9]) {
      const r = visibleRange(geo(top));
      expect(r.end - r.start, `at ${top}`).toBeLessThanOrEqual(limit);
      expect(r.start).toBeGreaterThanOrEqual(0);
      expect(r.end).toBeLessThanOrEqual(100_000);
      expect(r.end).toBeGreaterThan(r.start);
    }
    // At the top: the rows in view and the overscan below, none above.
    expect(visibleRange(geo(0))).toEqual({ start: 0, end: 17 + 8 });
    // The middle: row 50,000 is the first shown, 8 more on each side.
    const mid = visibleRange(geo(50_000 * ROW));
    expect(mid).toEqual({ start: 50_000 - 8, end: 50_000 + 17 + 8 });
    // At the very end: up to the last row.
    expect(visibleRange(geo(100_000 * ROW - 600)).end).toBe(100_000);
    // Nothing to show: no rows.
    expect(visibleRange(geo(0, { total: 0 }))).toEqual({ start: 0, end: 0 });
    expect(visibleRange(geo(500, { total: 5 }))).toEqual({ start: 0, end: 5 });
  });

  test("a scroll to the middle asks for only the one or two pages it needs", () => {
    const mid = pagesFor(visibleRange(geo(50_000 * ROW)), PAGE);
    expect(mid).toEqual([249, 250]); // rows 49,992..50,024 straddle pages 249 and 250
    const inside = pagesFor(visibleRange(geo(50_100 * ROW)), PAGE);
    expect(inside).toEqual([250]);
    // Wherever the scroll is, never more than two pages.
    for (let top = 0; top < 3_600_000; top += 7_919) {
      const p = pagesFor(visibleRange(geo(top)), PAGE);
      expect(p.length).toBeGreaterThanOrEqual(1);
      expect(p.length).toBeLessThanOrEqual(2);
    }
    expect(pagesFor(visibleRange(geo(0)), PAGE)).toEqual([0]);
    expect(pagesFor(visibleRange(geo(1e12)), PAGE)).toEqual([499]);
    expect(pagesFor({ start: 0, end: 0 }, PAGE)).toEqual([]);
    // Pages held or being fetched are not asked for again.
    const c = cachePut(pageCache(20, PAGE), 249, []);
    expect(pagesToFetch([249, 250], c)).toEqual([250]);
    expect(pagesToFetch([249, 250], c, new Set([250]))).toEqual([]);
  });

  test("the keyboard's row is scrolled into view, as little as possible", () => {
    const g = { scrollTop: 3600, viewportHeight: 600, rowHeight: ROW };
    expect(scrollToRow(110, g)).toBe(3600); // already in view
    expect(scrollToRow(99, g)).toBe(99 * ROW); // above: at the top
    expect(scrollToRow(120, g)).toBe(121 * ROW - 600); // below: at the bottom
    const r = visibleRange({ ...g, scrollTop: scrollToRow(120, g), total: 1000, overscan: 0 });
    expect(r.start).toBeLessThanOrEqual(120);
    expect(r.end).toBeGreaterThan(120);
  });

  test("the page cache keeps at most its bound, the least recently used going first", () => {
    const entries = (p) => Array.from({ length: PAGE }, (_, i) => ({ path: `/c/f${p * PAGE + i}` }));
    let c = pageCache(20, PAGE);
    for (let p = 0; p < 100; p++) {
      c = cachePut(c, p, entries(p));
      expect(c.pages.size).toBeLessThanOrEqual(20);
      // The pages in view are touched on each frame: they are never the ones to go.
      c = cacheTouch(c, [3]);
      expect(c.pages.has(3) || p < 3).toBe(true);
    }
    expect(c.pages.size).toBe(20);
    expect([...c.pages.keys()].sort((a, b) => a - b)).toEqual([3, ...Array.from({ length: 19 }, (_, i) => 81 + i)]);
    expect(cacheRow(c, 99 * PAGE + 5)).toEqual({ path: `/c/f${99 * PAGE + 5}` });
    expect(cacheRow(c, 5)).toBeUndefined(); // page 0 went
    // Values: the cache before a put is unchanged; a touch of what is already newest is a no-op.
    const before = c;
    const after = cachePut(c, 500, []);
    expect(before.pages.has(500)).toBe(false);
    expect(after.pages.size).toBe(20);
    expect(cacheTouch(after, [500])).toBe(after);
    // A bound of one.
    let one = pageCache(1, PAGE);
    one = cachePut(cachePut(one, 1, []), 2, []);
    expect([...one.pages.keys()]).toEqual([2]);
  });

  test("state events change the cached rows in one pass and say which matched", () => {
    let c = pageCache(20, 2);
    c = cachePut(c, 0, [
      { path: "/c/a", state: "online-only", sync: "synced", size: 10, local_bytes: 0 },
      { path: "/c/b", state: "online-only", sync: "synced", size: 10, local_bytes: 0 },
    ]);
    c = cachePut(c, 1, [{ path: "/c/c", state: "local", sync: "synced", size: 1, local_bytes: 1 }]);
    const evs = new Map([
      ["/c/b", { path: "/c/b", state: "local", sync: "synced", size: 10, local_bytes: 10 }],
      ["/c/new", { path: "/c/new", state: "local", sync: "synced", size: 1, local_bytes: 1 }],
    ]);
    const r = cacheApply(c, evs);
    expect([...r.matched]).toEqual(["/c/b"]);
    expect(cacheRow(r.cache, 1)).toMatchObject({ state: "local", percent: 100 });
    expect(cacheRow(r.cache, 0)).toBe(cacheRow(c, 0));
    expect(r.cache.pages.get(1)).toBe(c.pages.get(1)); // untouched pages are the same
    expect([...r.cache.pages.keys()]).toEqual([0, 1]); // recency kept
    expect(cacheRow(c, 1).state).toBe("online-only"); // the old cache is unchanged
    expect(cacheApply(c, new Map()).cache).toBe(c);
    const rows = c.pages.get(0);
    expect(applyStates(rows, new Map()).entries).toBe(rows);
    expect(parentOf("/c/b")).toBe("/c");
    expect(parentOf("/c/d/")).toBe("/c");
    expect(parentOf("/c")).toBe("/");
  });

  test("the selection is kept by path, also for 'all' over rows never fetched", () => {
    const a = { path: "/c/a", kind: "file" };
    const b = { path: "/c/b", kind: "dir" };
    let s = selection();
    expect(selectedCount(s, 100_000)).toBe(0);
    expect(actionsForSelection(s, 100_000)).toEqual([]);
    s = setSelected(s, a, true);
    expect(isSelected(s, "/c/a")).toBe(true);
    expect(actionsForSelection(s, 100_000)).toEqual(["offline", "free", "online-only", "open", "reveal"]);
    s = setSelected(s, b, true);
    expect(selectedCount(s, 100_000)).toBe(2);
    expect(actionsForSelection(s, 100_000)).toEqual(["offline", "free", "online-only"]);
    expect(setSelected(s, b, true)).toBe(s);
    s = setSelected(s, a, false);
    expect(actionsForSelection(s, 100_000)).toEqual(["offline", "free", "online-only", "reveal"]);
    // All of 100,000 but one.
    let all = selection(true);
    expect(selectedCount(all, 100_000)).toBe(100_000);
    expect(isSelected(all, "/c/never-fetched")).toBe(true);
    all = setSelected(all, a, false);
    expect(isSelected(all, "/c/a")).toBe(false);
    expect(selectedCount(all, 100_000)).toBe(99_999);
    expect(selectedAmong(all, ["/c/a", "/c/b", "/c/x"])).toEqual(["/c/b", "/c/x"]);
    expect(actionsForSelection(all, 100_000)).toEqual(["offline", "free", "online-only"]);
    // "All" of a folder of two, one left out: one entry, a file, so it can be opened.
    expect(actionsForSelection(all, 2, () => ({ path: "/c/z", kind: "file" }))).toContain("open");
    expect(actionsForSelection(all, 2)).toEqual(["offline", "free", "online-only", "reveal"]);
    expect(actionsForSelection(all, 1)).toEqual([]);
  });
});

d("the Files view's columns", () => {
  test("a header click sorts by it; a second click reverses", () => {
    let o = { sort: "name", descending: false, filter: "x" };
    o = nextSort(o, "name");
    expect(o).toEqual({ sort: "name", descending: true });
    o = nextSort(o, "size");
    expect(o).toEqual({ sort: "size", descending: true }); // largest first
    expect(nextSort(o, "size")).toEqual({ sort: "size", descending: false });
    expect(ariaSort({ sort: "size", descending: true }, "size")).toBe("descending");
    expect(ariaSort({ sort: "size", descending: true }, "name")).toBe("none");
  });
  test("file types from the name, with the icon theme's generic icon names", () => {
    expect(fileType({ kind: "file", path: "/c/Photo.JPG" })).toMatchObject({ kind: "image", icon: "image-x-generic" });
    expect(fileType({ kind: "file", path: "/c/a.tar.gz" }).kind).toBe("archive");
    expect(fileType({ kind: "file", path: "/c/.bashrc" }).kind).toBe("file");
    expect(fileType({ kind: "file", path: "/c/README" }).icon).toBe("text-x-generic");
    expect(fileType({ kind: "dir", path: "/c/x.pdf" }).icon).toBe("folder");
  });
  test("shift-click ranges and adding them to a selection", () => {
    expect(rangeOf(5, 2)).toEqual({ start: 2, end: 6 });
    expect(rangeOf(-1, 3)).toEqual({ start: 3, end: 4 });
    const es = ["/c/a", "/c/b", "/c/c"].map((path) => ({ path, kind: "file" }));
    const s = selectAll(selection(), es);
    expect(selectedCount(s, 3)).toBe(3);
    const but = selectAll(selection(true), es); // all selected already: nothing changes
    expect(selectedCount(but, 10)).toBe(10);
  });
});

d("storage overview", () => {
  test("the bar's parts, budget mark and words", () => {
    const G = 1e9;
    const v = storage({ size: 10 * G, local_bytes: 2.5 * G, counts: { pinned: 3 } }, { max_bytes: 5 * G }, 40 * G);
    expect(v.parts.map((p) => [p.kind, p.percent])).toEqual([["local", 25], ["online", 75]]);
    expect(v.budgetPercent).toBe(50);
    expect(v.summary).toBe("2.5 GB of 10 GB on this device · 3 files always kept here · budget 5.0 GB · 40 GB free on the disk");
    const e = storage({ size: 0, local_bytes: 0 }, null, NaN);
    expect(e.parts.every((p) => p.percent === 0)).toBe(true);
    expect(e.summary).toBe("0 B of 0 B on this device");
    expect(storage({ size: 1, local_bytes: 1 }, { keep_free_percent: 10 }).summary).toContain("keeps 10 % of the disk free");
  });
});
