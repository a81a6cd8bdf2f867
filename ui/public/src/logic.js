// Pure logic of the Skyfill window and tray: labels, icons, formatting, the wizard's server
// recognition and validation, and how daemon events update what is shown. No DOM, no Tauri:
// tested with Vitest (test/logic.test.js).

/** Words and icon for each file state (the daemon's `state` plus sync state). */
export const STATES = {
  "online-only": { icon: "cloud", words: "Online-only" },
  partial: { icon: "cloud-half", words: "Partly on this device" },
  local: { icon: "check", words: "On this device" },
  pinned: { icon: "check-solid", words: "Always on this device" },
  syncing: { icon: "sync", words: "Syncing" },
  pending: { icon: "sync", words: "Waiting to sync" },
  conflict: { icon: "conflict", words: "Conflict" },
  error: { icon: "error", words: "Error" },
  folder: { icon: "folder", words: "Folder" },
};

/** What to show for one entry (a `PathStatus` from the daemon). */
export function describe(st) {
  if (st.kind === "dir") {
    const c = st.counts || {};
    const n = (c.online_only || 0) + (c.partial || 0) + (c.local || 0) + (c.pinned || 0);
    const parts = [];
    if (c.pinned) parts.push(`${c.pinned} always here`);
    if (c.local) parts.push(`${c.local} here`);
    if (c.partial) parts.push(`${c.partial} partly here`);
    if (c.online_only) parts.push(`${c.online_only} online-only`);
    const key = st.setting === "pinned" ? "pinned" : "folder";
    return { ...STATES[key], detail: n ? parts.join(", ") : "empty" };
  }
  if (st.sync === "error") return { ...STATES.error, detail: "" };
  if (st.sync === "conflict") return { ...STATES.conflict, detail: "" };
  if (st.sync === "uploading") return { ...STATES.syncing, detail: "uploading" };
  if (st.sync === "pending") return { ...STATES.pending, detail: "" };
  const s = STATES[st.state] || STATES["online-only"];
  const detail =
    st.state === "partial" && typeof st.percent === "number"
      ? `${Math.floor(st.percent)} %`
      : "";
  return { ...s, detail };
}

export function formatBytes(n) {
  if (!Number.isFinite(n) || n < 0) return "?";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export function formatRate(bytesPerSec) {
  return `${formatBytes(Math.round(bytesPerSec))}/s`;
}

/** "12 s", "3 min", "1 h 5 min"; null when unknown. */
export function formatEta(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return null;
  if (seconds < 60) return `${Math.ceil(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  const h = Math.floor(seconds / 3600);
  return `${h} h ${Math.round((seconds - h * 3600) / 60)} min`;
}

/**
 * Transfers: `progress` events folded into a map keyed by path, with rate and time left
 * (from the first and latest sample). `now` in milliseconds.
 */
export function applyProgress(transfers, ev, now) {
  const t = transfers[ev.path] || { first: now, firstDone: ev.done };
  const elapsed = (now - t.first) / 1000;
  const rate = elapsed > 0 ? (ev.done - t.firstDone) / elapsed : 0;
  const left = rate > 0 ? (ev.total - ev.done) / rate : null;
  const next = {
    ...t,
    path: ev.path,
    direction: ev.direction,
    done: ev.done,
    total: ev.total,
    pid: ev.pid ?? null,
    app: ev.app ?? null,
    rate,
    eta: formatEta(left),
    finished: ev.total > 0 && ev.done >= ev.total,
    at: now,
  };
  return { ...transfers, [ev.path]: next };
}

/** A root needs the user to sign in again (the daemon's `state`, or no usable secret). */
export const needsSignIn = (r) => r.state === "needs-sign-in" || !r.signed_in;

/** A root is paused. */
export const isPaused = (r) => r.state === "paused" || r.paused;

/**
 * The overall state for the tray icon and tooltip, from each root's `state` as the daemon
 * decides it (error text is shown, never read).
 */
export function overall({ connected, roots = [], transfers = {}, pendingConflicts = 0 }) {
  if (!connected) return { icon: "error", tooltip: "Skyfill: the daemon is not running" };
  if (roots.length === 0) return { icon: "idle", tooltip: "Skyfill: no sync folder yet" };
  if (roots.some(needsSignIn)) return { icon: "signin", tooltip: "Skyfill: sign-in needed" };
  if (roots.every(isPaused)) return { icon: "paused", tooltip: "Skyfill: paused" };
  if (roots.some((r) => r.state === "offline"))
    return { icon: "offline", tooltip: "Skyfill: offline, changes are kept" };
  const active = Object.values(transfers).filter((t) => !t.finished).length;
  if (active) return { icon: "syncing", tooltip: `Skyfill: syncing ${active} file${active > 1 ? "s" : ""}` };
  if (roots.some((r) => r.state === "syncing")) return { icon: "syncing", tooltip: "Skyfill: syncing" };
  const failing = roots.filter((r) => r.state === "error");
  if (failing.length)
    return { icon: "error", tooltip: `Skyfill: ${failing[0].last_error || "a problem needs you"}` };
  if (pendingConflicts)
    return { icon: "conflict", tooltip: `Skyfill: ${pendingConflicts} conflict${pendingConflicts > 1 ? "s" : ""}` };
  return { icon: "ok", tooltip: "Skyfill: up to date" };
}

/**
 * Recognises a server URL typed in the wizard. Nextcloud and ownCloud base URLs get their DAV
 * path filled in (`/remote.php/dav/files/USER/`). Returns { kind, url, error }.
 */
export function recognizeServer(input, user) {
  let s = (input || "").trim();
  if (!s) return { error: "Enter the server address." };
  if (!/^[a-z]+:\/\//i.test(s)) s = `https://${s}`;
  let u;
  try {
    u = new URL(s);
  } catch {
    return { error: "This is not a valid address." };
  }
  if (!["http:", "https:"].includes(u.protocol))
    return { error: "Use an http:// or https:// address." };
  const path = u.pathname.replace(/\/+$/, "");
  const scheme = u.protocol === "https:" ? "davs" : "dav";
  const who = encodeURIComponent(user || "");
  if (/\/remote\.php\/(web)?dav(\/|$)/.test(path)) {
    return { kind: "webdav", url: `${scheme}://${u.host}${path}/`, nextcloud: true };
  }
  if (path === "" || path === "/index.php" || /\/(nextcloud|owncloud)$/.test(path)) {
    const base = path.replace(/\/index\.php$/, "");
    if (!who) return { error: "Enter your user name first: it is part of the folder address." };
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
    return { error: "Bucket names are 3-63 lower-case letters, digits, dots and dashes." };
  const p = (prefix || "").trim().replace(/^\/+|\/+$/g, "");
  return { url: p ? `s3://${b}/${p}` : `s3://${b}` };
}

/** Checks the local folder the wizard will use; returns an error text or null. */
export function checkFolder(path, home) {
  const p = (path || "").trim();
  if (!p.startsWith("/")) return "Choose a full path, like " + `${home}/Cloud`;
  if (p.split("/").some((c) => c === ".." || c === ".")) return "The path may not contain . or ..";
  if (p === home || p === "/") return "Choose a new or empty folder inside your home.";
  return null;
}

/** Applies a `state` event to the listing shown (entries keyed by absolute path). */
export function applyState(entries, ev) {
  const i = entries.findIndex((e) => e.path === ev.path);
  if (i < 0) return entries;
  const next = entries.slice();
  next[i] = {
    ...entries[i],
    state: ev.state,
    sync: ev.sync,
    size: ev.size,
    local_bytes: ev.local_bytes,
    percent: ev.size ? (100 * ev.local_bytes) / ev.size : undefined,
  };
  return next;
}

/**
 * The human text for an error code (the daemon's, or "unreachable"), with what to do. For
 * "unreachable" and "version_mismatch" the app's message already says what to do.
 */
export function errorText(code, message) {
  const hints = {
    auth: "Sign in again from Settings.",
    not_a_root: "The file is not in a Skyfill folder.",
    not_authorized: "You may not change this folder.",
    remote: "Check the server address and your connection.",
    unsynced: "Some files have changes that are not on the server yet; wait until they are synced.",
    busy: "Skyfill is busy with this; try again in a moment.",
    budget: "Free up space, unpin files or raise the budget in Settings.",
  };
  return hints[code] ? `${message} — ${hints[code]}` : message;
}

/** What to show for a failed command (an ApiError from api.js: `{code, message}`). */
export function problem(e) {
  if (e && typeof e === "object" && "code" in e) return errorText(e.code, String(e.message ?? ""));
  return String(e?.message ?? e);
}

/** Actions offered for a selection (all need at least one entry). */
export function actionsFor(selection) {
  if (!selection.length) return [];
  const single = selection.length === 1;
  const a = ["offline", "free", "online-only"];
  if (single && selection[0].kind === "file") a.push("open");
  if (single) a.push("reveal");
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
