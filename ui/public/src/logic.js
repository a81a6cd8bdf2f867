// Pure logic of the Skyfill window and tray: labels, icons, formatting, the wizard's server
// recognition and validation, and how daemon events update what is shown. No DOM, no Tauri:
// tested with Vitest (test/logic.test.js). Words go through i18n.js (`t`, `tn`): every text
// made here is in the language of the catalogue in use when it is made.

import { formatList, formatNumber, locale, t, tn } from "./i18n.js";

/** Words and icon for each file state (the daemon's `state` plus sync state); the words in the language in use when read. */
export const STATES = {
  "online-only": { icon: "cloud", get words() { return t("Online-only"); } },
  partial: { icon: "cloud-half", get words() { return t("Partly on this device"); } },
  local: { icon: "check", get words() { return t("On this device"); } },
  pinned: { icon: "check-solid", get words() { return t("Always on this device"); } },
  syncing: { icon: "sync", get words() { return t("Syncing"); } },
  pending: { icon: "sync", get words() { return t("Waiting to sync"); } },
  conflict: { icon: "conflict", get words() { return t("Conflict"); } },
  error: { icon: "error", get words() { return t("Error"); } },
  folder: { icon: "folder", get words() { return t("Folder"); } },
};

/** What to show for one entry (a `PathStatus` from the daemon). */
export function describe(st) {
  if (st.kind === "dir") {
    const c = st.counts || {};
    const n = (c.online_only || 0) + (c.partial || 0) + (c.local || 0) + (c.pinned || 0);
    const parts = [];
    // TRANSLATORS: counts of a folder's files and where they are, listed together ("3 always here, 2 online-only").
    if (c.pinned) parts.push(tn("{n} always here", "{n} always here", c.pinned));
    if (c.local) parts.push(tn("{n} here", "{n} here", c.local));
    if (c.partial) parts.push(tn("{n} partly here", "{n} partly here", c.partial));
    if (c.online_only) parts.push(tn("{n} online-only", "{n} online-only", c.online_only));
    const key = st.setting === "pinned" ? "pinned" : "folder";
    // TRANSLATORS: the state of a folder with nothing in it.
    return { ...STATES[key], detail: n ? formatList(parts) : t("empty") };
  }
  if (st.sync === "error") return { ...STATES.error, detail: "" };
  if (st.sync === "conflict") return { ...STATES.conflict, detail: "" };
  if (st.sync === "uploading") return { ...STATES.syncing, detail: t("uploading") };
  if (st.sync === "pending") return { ...STATES.pending, detail: "" };
  const s = STATES[st.state] || STATES["online-only"];
  const detail =
    st.state === "partial" && typeof st.percent === "number"
      ? t("{percent} %", { percent: formatNumber(Math.floor(st.percent)) })
      : "";
  return { ...s, detail };
}

/** A size with its unit, in decimal units (1 KB = 1000 bytes). */
const UNITS = [
  (size) => t("{size} B", { size }),
  (size) => t("{size} KB", { size }),
  (size) => t("{size} MB", { size }),
  (size) => t("{size} GB", { size }),
  (size) => t("{size} TB", { size }),
];

/** "999 B", "1.5 KB", "25 MB" (the locale's decimal separator). */
export function formatBytes(n) {
  if (!Number.isFinite(n) || n < 0) return "?";
  let i = 0;
  let v = n;
  while (v >= 1000 && i < UNITS.length - 1) {
    v /= 1000;
    i++;
  }
  const digits = i === 0 ? 0 : v < 10 ? 1 : 0;
  return UNITS[i](formatNumber(v, { minimumFractionDigits: digits, maximumFractionDigits: digits, useGrouping: false }));
}

export function formatRate(bytesPerSec) {
  // TRANSLATORS: a rate, a size per second ("1.2 MB/s").
  return t("{size}/s", { size: formatBytes(Math.round(bytesPerSec)) });
}

/** "12 s", "3 min", "1 h 5 min"; null when unknown. */
export function formatEta(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return null;
  if (seconds < 60) return t("{seconds} s", { seconds: formatNumber(Math.ceil(seconds)) });
  if (seconds < 3600) return t("{minutes} min", { minutes: formatNumber(Math.round(seconds / 60)) });
  const h = Math.floor(seconds / 3600);
  return t("{hours} h {minutes} min", { hours: formatNumber(h), minutes: formatNumber(Math.round((seconds - h * 3600) / 60)) });
}

/** The window over which rates are averaged (ms): long enough to smooth bursts of pieces, short enough to follow a change of speed. */
export const RATE_WINDOW = 5000;

/**
 * Transfers: `progress` events folded into a map keyed by path. Each keeps its samples of the
 * last RATE_WINDOW ms (and the one just before, so the window is always covered); the rate
 * is a moving average over them, never the rate since the start (which a transfer that
 * waited for its turn would drag towards zero) and never "0 B/s" while bytes move: until two
 * samples span some time the rate is unknown (null). `now` in milliseconds.
 */
export function applyProgress(transfers, ev, now) {
  const was = transfers[ev.path] || { samples: [] };
  const samples = [...was.samples.filter((s) => s.at !== now), { at: now, done: ev.done }];
  while (samples.length > 2 && samples[1].at <= now - RATE_WINDOW) samples.shift();
  const next = {
    ...was,
    path: ev.path,
    direction: ev.direction,
    done: ev.done,
    total: ev.total,
    pid: ev.pid ?? was.pid ?? null,
    app: ev.app ?? was.app ?? null,
    samples,
    finished: ev.total > 0 && ev.done >= ev.total,
    at: now,
  };
  next.rate = transferRate(next, now);
  next.eta = formatEta(next.rate > 0 ? (ev.total - ev.done) / next.rate : NaN);
  return { ...transfers, [ev.path]: next };
}

/**
 * Bytes per second of a transfer over the last RATE_WINDOW ms, as of `now`: null while
 * unknown (a single sample), and falling towards 0 once no bytes arrive (the time since the
 * last sample counts).
 */
export function transferRate(x, now) {
  const s = x.samples || [];
  if (s.length < 2) return null;
  // From the last sample at or before the window's start (the first, if none is).
  let base = s[0];
  for (const x of s) if (x.at <= now - RATE_WINDOW) base = x;
  const span = (now - base.at) / 1000;
  return span > 0 ? Math.max(0, x.done - base.done) / span : null;
}

/** Rate and time left of all live transfers together (the tray tooltip's words), or null. */
export function totalRate(transfers, now) {
  let rate = 0;
  let left = 0;
  let known = false;
  for (const x of Object.values(transfers)) {
    if (x.finished) continue;
    const r = transferRate(x, now);
    left += Math.max(0, x.total - x.done);
    if (r !== null) {
      rate += r;
      known = true;
    }
  }
  if (!known) return null;
  return { rate, eta: formatEta(rate > 0 ? left / rate : NaN) };
}

/** What a transfer's line says of its speed: "3.1 MB of 9.4 MB · 1.2 MB/s · 5 s left". */
export function transferText(x, now) {
  const r = transferRate(x, now);
  const speed = r === null ? t("starting…") : r < 1 ? t("stalled") : formatRate(r);
  const time = r > 0 ? formatEta((x.total - x.done) / r) : null;
  const vars = { done: formatBytes(x.done), total: formatBytes(x.total), speed, time };
  // TRANSLATORS: a transfer: bytes done of its size, its speed (a rate, "starting…" or "stalled") and the time left.
  return time ? t("{done} of {total} · {speed} · {time} left", vars) : t("{done} of {total} · {speed}", vars);
}

/** A path as people read it: `~/Cloud` for a path in the home folder, the path itself elsewhere. */
export function homeRelative(path, home) {
  const h = (home || "").replace(/\/+$/, "");
  if (!h || !path) return path;
  if (path === h) return "~";
  return path.startsWith(`${h}/`) ? `~${path.slice(h.length)}` : path;
}

/** A sync folder's display name: its last component ("Cloud"). */
export function displayName(path) {
  return path.replace(/\/+$/, "").split("/").pop() || "/";
}

/** A root needs the user to sign in again (the daemon's `state`, or no usable secret). */
export const needsSignIn = (r) => r.state === "needs-sign-in" || !r.signed_in;

/** A root is paused. */
export const isPaused = (r) => r.state === "paused" || r.paused;

/**
 * The overall state (the window's summary line), from each root's `state` as the daemon
 * decides it (error text is shown, never read): an icon name and words.
 */
export function overallState({ connected, roots = [], transfers = {}, pendingConflicts = 0 }) {
  if (!connected) return { icon: "error", words: t("the daemon is not running") };
  if (roots.length === 0) return { icon: "idle", words: t("no sync folder yet") };
  if (roots.some(needsSignIn)) return { icon: "signin", words: t("sign-in needed") };
  if (roots.every(isPaused)) return { icon: "paused", words: t("paused") };
  if (roots.some((r) => r.state === "offline")) return { icon: "offline", words: t("offline, changes are kept") };
  const active = Object.values(transfers).filter((x) => !x.finished).length;
  if (active) return { icon: "syncing", words: tn("syncing {n} file", "syncing {n} files", active) };
  if (roots.some((r) => r.state === "syncing")) return { icon: "syncing", words: t("syncing") };
  const failing = roots.filter((r) => r.state === "error");
  if (failing.length) return { icon: "error", words: failing[0].last_error || t("a problem needs you") };
  if (pendingConflicts) return { icon: "conflict", words: tn("{n} conflict", "{n} conflicts", pendingConflicts) };
  return { icon: "ok", words: t("up to date") };
}

/** The overall state for the tray icon and tooltip ("Skyfill: up to date"). */
export function overall(args) {
  const s = overallState(args);
  // TRANSLATORS: the tooltip: the product's name and the overall state ("up to date").
  return { icon: s.icon, tooltip: t("Skyfill: {state}", { state: s.words }) };
}

/**
 * Recognises a server URL typed in the wizard. Nextcloud and ownCloud base URLs get their DAV
 * path filled in (`/remote.php/dav/files/USER/`). Returns { kind, url, error }.
 */
export function recognizeServer(input, user) {
  let s = (input || "").trim();
  if (!s) return { error: t("Enter the server address.") };
  if (!/^[a-z]+:\/\//i.test(s)) s = `https://${s}`;
  let u;
  try {
    u = new URL(s);
  } catch {
    return { error: t("This is not a valid address.") };
  }
  if (!["http:", "https:"].includes(u.protocol))
    return { error: t("Use an http:// or https:// address.") };
  const path = u.pathname.replace(/\/+$/, "");
  const scheme = u.protocol === "https:" ? "davs" : "dav";
  const who = encodeURIComponent(user || "");
  if (/\/remote\.php\/(web)?dav(\/|$)/.test(path)) {
    return { kind: "webdav", url: `${scheme}://${u.host}${path}/`, nextcloud: true };
  }
  if (path === "" || path === "/index.php" || /\/(nextcloud|owncloud)$/.test(path)) {
    const base = path.replace(/\/index\.php$/, "");
    if (!who) return { error: t("Enter your user name first: it is part of the folder address.") };
    return {
      kind: "webdav",
      url: `${scheme}://${u.host}${base}/remote.php/dav/files/${who}/`,
      nextcloud: true,
    };
  }
  return { kind: "webdav", url: `${scheme}://${u.host}${path}/`, nextcloud: false };
}

/** Builds the add-root remote URL for S3 fields; returns { url, error }. */
export function s3Url({ bucket, prefix }) {
  const b = (bucket || "").trim();
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(b))
    return { error: t("Bucket names are 3-63 lower-case letters, digits, dots and dashes.") };
  const p = (prefix || "").trim().replace(/^\/+|\/+$/g, "");
  return { url: p ? `s3://${b}/${p}` : `s3://${b}` };
}

/** Checks the local folder the wizard will use; returns an error text or null. */
export function checkFolder(path, home) {
  const p = (path || "").trim();
  if (!p.startsWith("/")) return t("Choose a full path, like {example}", { example: `${home}/Cloud` });
  if (p.split("/").some((c) => c === ".." || c === ".")) return t("The path may not contain . or ..");
  if (p === home || p === "/") return t("Choose a new or empty folder inside your home.");
  return null;
}

/** An entry as a `state` event says it now is. */
function withState(entry, ev) {
  return {
    ...entry,
    state: ev.state,
    sync: ev.sync,
    size: ev.size,
    local_bytes: ev.local_bytes,
    percent: ev.size ? (100 * ev.local_bytes) / ev.size : undefined,
  };
}

/**
 * Applies many `state` events (a Map path -> latest event) in one pass over the entries.
 * Returns the entries (the same array when none matched) and the paths that matched.
 */
export function applyStates(entries, evs) {
  let next = entries;
  const matched = new Set();
  if (!evs.size) return { entries, matched };
  for (let i = 0; i < entries.length; i++) {
    const ev = evs.get(entries[i].path);
    if (!ev) continue;
    if (next === entries) next = entries.slice();
    next[i] = withState(entries[i], ev);
    matched.add(ev.path);
  }
  return { entries: next, matched };
}

/** The folder a path is in ("/a/b/c" -> "/a/b"). */
export function parentOf(path) {
  const p = path.replace(/\/+$/, "");
  const i = p.lastIndexOf("/");
  return i <= 0 ? "/" : p.slice(0, i);
}

// ------------------------------------------------------------------ the virtualized file list
// The Files view shows a folder of any size (100,000 entries and more): only the rows in the
// scroll viewport, plus a few above and below ("overscan"), are in the page; the rest is two
// spacers of the rows' height. Rows are fetched by pages (`list_page`) as they come into view,
// and the pages fetched are kept in a small cache (least recently used out first).

/** Rows the viewport can show at once, counting a partly shown row at each end. */
export function viewportRows(viewportHeight, rowHeight) {
  if (!(rowHeight > 0) || !(viewportHeight > 0)) return 0;
  return Math.ceil(viewportHeight / rowHeight) + 1;
}

/**
 * The rows to have in the page for a scroll position: indexes start..end-1 (end excluded),
 * the rows at least partly in the viewport plus `overscan` rows on each side, within 0..total.
 * `scrollTop` is measured from the first row's top. Never more than
 * viewportRows(viewportHeight, rowHeight) + 2 × overscan rows.
 */
export function visibleRange({ scrollTop, viewportHeight, rowHeight, total, overscan = 0 }) {
  if (!(total > 0) || !(rowHeight > 0)) return { start: 0, end: 0 };
  const top = Math.max(0, scrollTop || 0);
  const height = Math.max(0, viewportHeight || 0);
  const first = Math.min(total - 1, Math.floor(top / rowHeight));
  const last = Math.min(total, Math.max(first + 1, Math.ceil((top + height) / rowHeight)));
  return { start: Math.max(0, first - overscan), end: Math.min(total, last + overscan) };
}

/** The page indexes (pages of `pageSize` rows) that hold rows start..end-1. */
export function pagesFor({ start, end }, pageSize) {
  if (!(end > start) || !(pageSize > 0)) return [];
  const out = [];
  for (let p = Math.floor(start / pageSize); p <= Math.floor((end - 1) / pageSize); p++) out.push(p);
  return out;
}

/** The pages to fetch: those needed, not in the cache and not already being fetched. */
export function pagesToFetch(needed, cache, loading = new Set()) {
  return needed.filter((p) => !cache.pages.has(p) && !loading.has(p));
}

/**
 * The scrollTop that brings row `index` fully into the viewport, moving as little as possible
 * (the same scrollTop when it is already in view).
 */
export function scrollToRow(index, { scrollTop, viewportHeight, rowHeight }) {
  const top = index * rowHeight;
  if (top < scrollTop) return top;
  if (top + rowHeight > scrollTop + viewportHeight) return Math.max(0, top + rowHeight - viewportHeight);
  return scrollTop;
}

/**
 * An empty page cache holding at most `max` pages of `pageSize` rows. The cache is a value:
 * every function below returns a new one. `pages` is a Map page index -> entries, least
 * recently used first.
 */
export function pageCache(max = 20, pageSize = 200) {
  return { max: Math.max(1, max), pageSize, pages: new Map() };
}

/** The cache with page `index` added (or replaced) as the most recent, then the least recently used dropped until it holds at most `max`. */
export function cachePut(cache, index, entries) {
  const pages = new Map(cache.pages);
  pages.delete(index);
  pages.set(index, entries);
  for (const k of pages.keys()) {
    if (pages.size <= cache.max) break;
    pages.delete(k);
  }
  return { ...cache, pages };
}

/** The cache with the given pages (those it holds) made the most recent: they are dropped last. */
export function cacheTouch(cache, indexes) {
  const held = indexes.filter((i) => cache.pages.has(i));
  const keys = [...cache.pages.keys()];
  // Already the most recent, in this order: the same cache.
  if (held.every((i, n) => keys[keys.length - held.length + n] === i)) return cache;
  const pages = new Map(cache.pages);
  for (const i of held) {
    const e = pages.get(i);
    pages.delete(i);
    pages.set(i, e);
  }
  return { ...cache, pages };
}

/** Row `index` of the folder, if its page is in the cache (undefined if not). */
export function cacheRow(cache, index) {
  const page = cache.pages.get(Math.floor(index / cache.pageSize));
  return page ? page[index % cache.pageSize] : undefined;
}

/** Applies `state` events (Map path -> latest event) to the cached pages: { cache, matched }. */
export function cacheApply(cache, evs) {
  let pages = cache.pages;
  const matched = new Set();
  for (const [i, entries] of cache.pages) {
    const r = applyStates(entries, evs);
    if (r.entries === entries) continue;
    if (pages === cache.pages) pages = new Map(cache.pages);
    pages.set(i, r.entries); // an existing key: the order (recency) stays
    for (const p of r.matched) matched.add(p);
  }
  return { cache: pages === cache.pages ? cache : { ...cache, pages }, matched };
}

// ------------------------------------------------------------------ selection, kept by path
// A selection is either some paths (`all` false: `paths` holds them) or every entry of the
// folder but some (`all` true: `paths` holds those left out), so that "select all" works on a
// folder whose rows are not all fetched. `paths` maps each path to its entry (for the actions
// offered). Values: each function returns a new selection.

/** Nothing selected, or (`all`) every entry of the folder. */
export function selection(all = false) {
  return { all, paths: new Map() };
}

export function isSelected(sel, path) {
  return sel.all !== sel.paths.has(path);
}

/** The selection with `entry` selected (on) or not. */
export function setSelected(sel, entry, on) {
  if (isSelected(sel, entry.path) === on) return sel;
  const paths = new Map(sel.paths);
  if (paths.has(entry.path)) paths.delete(entry.path);
  else paths.set(entry.path, entry);
  return { all: sel.all, paths };
}

/** How many entries are selected in a folder of `total` entries. */
export function selectedCount(sel, total) {
  return sel.all ? Math.max(0, total - sel.paths.size) : sel.paths.size;
}

/** The selected paths among `paths` (all of the folder's, in order). */
export function selectedAmong(sel, paths) {
  return paths.filter((p) => isSelected(sel, p));
}

/**
 * Actions offered for a selection kept by path in a folder of `total` entries; `only()` gives
 * the entry when exactly one is selected by "all but" (undefined when it is not at hand).
 */
export function actionsForSelection(sel, total, only = () => undefined) {
  if (!sel.all) return actionsFor([...sel.paths.values()]);
  const n = selectedCount(sel, total);
  return offered(n, n === 1 ? only() : undefined);
}

/**
 * The human text for an error code (the daemon's, or "unreachable"), with what to do. For
 * "unreachable" and "version_mismatch" the app's message already says what to do.
 */
export function errorText(code, message) {
  const hints = {
    auth: () => t("Sign in again from Settings."),
    not_a_root: () => t("The file is not in a Skyfill folder."),
    not_authorized: () => t("You may not change this folder."),
    remote: () => t("Check the server address and your connection."),
    unsynced: () => t("Some files have changes that are not on the server yet; wait until they are synced."),
    busy: () => t("Skyfill is busy with this; try again in a moment."),
    budget: () => t("Free up space, unpin files or raise the budget in Settings."),
  };
  // TRANSLATORS: what went wrong (the daemon's words), then what to do.
  return Object.hasOwn(hints, code) ? t("{message} — {hint}", { message, hint: hints[code]() }) : message;
}

/** What to show for a failed command (an ApiError from api.js: `{code, message}`). */
export function problem(e) {
  if (e && typeof e === "object" && "code" in e) return errorText(e.code, String(e.message ?? ""));
  return String(e?.message ?? e);
}

/** Actions offered for a selection (all need at least one entry). */
export function actionsFor(selection) {
  return offered(selection.length, selection[0]);
}

/** Actions for `n` selected entries; `only` is the entry when n is 1 (if known). */
function offered(n, only) {
  if (!n) return [];
  const a = ["offline", "free", "online-only"];
  if (n === 1 && only?.kind === "file") a.push("open");
  if (n === 1) a.push("reveal");
  return a;
}

/** Bytes as the settings fields take them back: 3M, 1.5G, 300K, 17. */
export function sizeText(n) {
  const units = [["T", 2 ** 40], ["G", 2 ** 30], ["M", 2 ** 20], ["K", 2 ** 10]];
  for (const [u, v] of units) {
    if (n >= v) {
      const x = n / v;
      return `${Number.isInteger(x) ? x : x.toFixed(1)}${u}`;
    }
  }
  return String(n);
}

// ------------------------------------------------------------------ the Files view's columns

/** Sort orders the daemon's `list_page` knows; folders always come first. */
export const SORT_KEYS = ["name", "size", "modified"];

/** The order after a click on column `key`'s header (`{sort, descending}`, as `list_page` takes it): the same column flips, another starts ascending by name, largest or newest first by size or date. */
export function nextSort(cur, key) {
  if (cur && cur.sort === key) return { sort: key, descending: !cur.descending };
  return { sort: key, descending: key !== "name" };
}

/** The `aria-sort` value of column `key` under `order`. */
export function ariaSort(order, key) {
  if (!order || order.sort !== key) return "none";
  return order.descending ? "descending" : "ascending";
}

// Each type: a kind, its icon name, its words (in the language in use when asked) and its extensions.
const TYPES = [
  ["image", "image-x-generic", () => t("Image"), ["jpg", "jpeg", "png", "gif", "webp", "heic", "tif", "tiff", "bmp", "svg", "raw", "cr2", "nef"]],
  ["audio", "audio-x-generic", () => t("Audio"), ["mp3", "flac", "ogg", "opus", "wav", "m4a", "aac"]],
  ["video", "video-x-generic", () => t("Video"), ["mp4", "mkv", "webm", "mov", "avi", "m4v"]],
  ["pdf", "application-pdf", () => t("PDF document"), ["pdf"]],
  ["archive", "package-x-generic", () => t("Archive"), ["zip", "tar", "gz", "tgz", "xz", "zst", "bz2", "7z", "rar", "deb", "iso"]],
  ["document", "x-office-document", () => t("Document"), ["odt", "doc", "docx", "rtf"]],
  ["spreadsheet", "x-office-spreadsheet", () => t("Spreadsheet"), ["ods", "xls", "xlsx", "csv"]],
  ["presentation", "x-office-presentation", () => t("Presentation"), ["odp", "ppt", "pptx"]],
  ["code", "text-x-script", () => t("Source code"), ["rs", "py", "js", "ts", "c", "h", "cpp", "go", "java", "sh", "rb", "json", "toml", "yaml", "yml", "html", "css"]],
  ["text", "text-x-generic", () => t("Text"), ["txt", "md", "log", "ini", "conf"]],
];
const BY_EXT = new Map(TYPES.flatMap(([kind, icon, words, exts]) => exts.map((x) => [x, { kind, icon, words }])));

/**
 * The type of an entry for its icon: a kind (CSS class of the fallback), the freedesktop icon
 * name of its MIME type's generic icon (looked up in the desktop's icon theme), and words.
 */
export function fileType(entry) {
  if (entry.kind === "dir") return { kind: "folder", icon: "folder", words: t("Folder") };
  const name = entry.path.split("/").pop();
  const dot = name.lastIndexOf(".");
  const ext = dot > 0 ? name.slice(dot + 1).toLowerCase() : "";
  const known = BY_EXT.get(ext);
  if (known) return { kind: known.kind, icon: known.icon, words: known.words() };
  return { kind: "file", icon: "text-x-generic", words: t("File") };
}

/**
 * "Today 14:05", "Yesterday 09:12", "3 Mar", "3 Mar 2023" for seconds since the epoch (null:
 * ""), in the locale of the catalogue in use unless `loc` says otherwise.
 */
export function formatDate(secs, now = Date.now(), loc = locale()) {
  if (!Number.isFinite(secs)) return "";
  const d = new Date(secs * 1000);
  const n = new Date(now);
  const time = d.toLocaleTimeString(loc, { hour: "2-digit", minute: "2-digit" });
  const day = (x) => new Date(x.getFullYear(), x.getMonth(), x.getDate()).getTime();
  const days = Math.round((day(n) - day(d)) / 86_400_000);
  if (days === 0) return t("Today {time}", { time });
  if (days === 1) return t("Yesterday {time}", { time });
  const opts = { day: "numeric", month: "short" };
  if (d.getFullYear() !== n.getFullYear()) opts.year = "numeric";
  return d.toLocaleDateString(loc, opts);
}

/**
 * The rows a shift-click selects: from the anchor to the row clicked, both included, as a
 * range of indexes (either direction).
 */
export function rangeOf(anchor, index) {
  const a = anchor >= 0 ? anchor : index;
  return { start: Math.min(a, index), end: Math.max(a, index) + 1 };
}

/** The selection with every entry of `entries` selected (a shift-click's range added). */
export function selectAll(sel, entries) {
  let s = sel;
  for (const e of entries) s = setSelected(s, e, true);
  return s;
}

// ------------------------------------------------------------------ the storage overview

/**
 * A sync folder's storage at a glance, from its status (`size`, `local_bytes`, `counts`), its
 * budget and the free space on its disk: the bar's parts as shares of the cloud (on this
 * device, online-only), the budget's mark on the same scale, and the words beside it.
 */
export function storage({ size = 0, local_bytes = 0, counts = {} }, budget, free) {
  const total = Math.max(size, local_bytes, 1);
  const online = Math.max(0, size - local_bytes);
  const pct = (x) => Math.min(100, Math.round((1000 * x) / total) / 10);
  const pinned = counts.pinned || 0;
  const parts = [
    { kind: "local", bytes: local_bytes, percent: pct(local_bytes), words: t("{size} on this device", { size: formatBytes(local_bytes) }) },
    { kind: "online", bytes: online, percent: pct(online), words: t("{size} online-only", { size: formatBytes(online) }) },
  ];
  // TRANSLATORS: facts about a sync folder's storage, shown one after the other separated by " · ".
  const lines = [t("{local} of {total} on this device", { local: formatBytes(local_bytes), total: formatBytes(size) })];
  if (pinned) lines.push(tn("{n} file always kept here", "{n} files always kept here", pinned));
  if (budget?.max_bytes) lines.push(t("budget {size}", { size: formatBytes(budget.max_bytes) }));
  else if (budget?.keep_free_percent)
    lines.push(t("keeps {percent} % of the disk free", { percent: formatNumber(budget.keep_free_percent) }));
  if (Number.isFinite(free)) lines.push(t("{size} free on the disk", { size: formatBytes(free) }));
  return { parts, summary: lines.join(" · "), budgetPercent: budget?.max_bytes ? pct(budget.max_bytes) : null };
}
