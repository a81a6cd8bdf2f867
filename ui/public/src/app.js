// The Skyfill window: DOM glue between the Rust side, reached only through api.js (commands
// and events), and the pure logic (logic.js). Everything the daemon says arrives as events
// (decoded in api.js, handled by `daemonEvents` below) and connection changes; the window
// never polls the file list. Failed commands are ApiErrors: their code decides what to do,
// their message is shown. Every word shown goes through i18n.js (the page's markup through
// translatePage, made once the catalogue is loaded at the start).

import * as api from "./api.js";
import { formatList, locale, setCatalogue, t, tn, tParts, translatePage } from "./i18n.js";
import {
  ariaSort,
  displayName,
  fileType,
  formatDate,
  homeRelative,
  nextSort,
  rangeOf,
  selectAll,
  storage,
  transferText,
  totalRate,
  sizeText,
  actionsForSelection,
  applyProgress,
  applyStates,
  cacheApply,
  cachePut,
  cacheRow,
  cacheTouch,
  checkFolder,
  describe,
  errorText,
  formatBytes,
  formatRate,
  isSelected,
  needsSignIn,
  overallState,
  pageCache,
  pagesFor,
  pagesToFetch,
  parentOf,
  problem,
  recognizeServer,
  s3Url,
  scrollToRow,
  selectedAmong,
  selectedCount,
  selection,
  setSelected,
  visibleRange,
} from "./logic.js";

const $ = (id) => document.getElementById(id);

// The Files view shows folders of any size: only the rows in view (and OVERSCAN more on each
// side) are in the page, fetched by pages of PAGE rows as they come into view (`list_page`),
// at most MAX_PAGES pages kept per folder (logic.js has the arithmetic and the cache).
const PAGE = 200; // rows per list_page call
const MAX_PAGES = 20; // pages kept in the cache of the folder shown
const OVERSCAN = 8; // rows in the page above and below the viewport
const MAX_LOADING = 2; // pages fetched at once while scrolling
const BULK = 1000; // rows per call when an action needs every path of the folder (the daemon caps a page at 1,000)
const REFRESH_WAIT = 250; // ms of quiet before daemon events re-fetch the rows in view...
const REFRESH_MAX_WAIT = 1500; // ...but never longer than this while events keep coming

/** The daemon serves pages of a folder (`list_page`); false once the Rust side says it has no such command: then `list` and the whole folder, still rendered virtually. */
let paged = true;

/**
 * The folder shown. Paged: rows come from `cache` (the pages fetched); while a refresh
 * re-fetches them, `stale` (the pages before it) is shown. Without `list_page`: `all` has every
 * entry. `gen` counts refreshes: an answer for an older one is dropped.
 */
function listing(dir) {
  return {
    dir,
    gen: 0,
    total: null, // entries in the folder; null until the first answer
    all: null,
    cache: pageCache(MAX_PAGES, PAGE),
    stale: null,
    loading: new Set(), // pages being fetched (of this generation)
    listing: false, // a `list` (no paging) is under way
    // The latest state event per path while something is being fetched: applied to what
    // arrives, which may have been read before the event.
    events: new Map(),
  };
}

const model = {
  connected: false,
  roots: [],
  root: null, // the selected root (local path)
  dir: "", // absolute path of the folder shown
  list: listing(""),
  sel: selection(), // kept by path (logic.js)
  focus: -1, // index of the row with the keyboard focus
  transfers: {},
  conflicts: [],
  errors: [],
  done: [],
  settings: null,
  home: "",
  // How the Files view orders and filters the folder (the daemon sorts: `list_page`).
  order: { sort: "name", descending: false, filter: "" },
  anchor: -1, // the row a shift-click selects from
  icons: new Map(), // icon name -> data URL from the desktop's icon theme (null: none there)
};

// ------------------------------------------------------------------ rendering

function el(tag, props = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids) e.append(k);
  return e;
}

function renderSummary() {
  const o = overallState({
    connected: model.connected,
    roots: model.roots,
    transfers: model.transfers,
    pendingConflicts: model.conflicts.length,
  });
  const speed = o.icon === "syncing" ? totalRate(model.transfers, Date.now()) : null;
  const vars = { state: o.words, speed: speed && (speed.rate >= 1 ? formatRate(speed.rate) : t("stalled")), time: speed?.eta };
  $("summary").textContent = !speed ? o.words
    // TRANSLATORS: the overall state ("syncing 3 files"), the rate of all transfers together and the time they have left.
    : speed.eta ? t("{state} · {speed} · {time} left", vars) : t("{state} · {speed}", vars);
  $("summary").dataset.state = o.icon;
}

function renderBanner(text) {
  const b = $("banner");
  b.hidden = !text;
  b.textContent = text || "";
}

function renderRoots() {
  const s = $("root-select");
  // Each sync folder by its name ("Cloud"), or its home-relative path where two share a name.
  const names = model.roots.map((r) => displayName(r.local));
  s.replaceChildren(...model.roots.map((r, i) => el("option", { value: r.local, title: homeRelative(r.local, model.home) },
    names.indexOf(names[i]) === names.lastIndexOf(names[i]) ? names[i] : homeRelative(r.local, model.home))));
  if (model.root) s.value = model.root;
}

function renderCrumbs() {
  const c = $("crumbs");
  c.replaceChildren();
  if (!model.root) return;
  const rel = model.dir.slice(model.root.length).split("/").filter(Boolean);
  const parts = [{ name: model.root.split("/").pop() || "/", path: model.root }];
  rel.forEach((n, i) => parts.push({ name: n, path: `${model.root}/${rel.slice(0, i + 1).join("/")}` }));
  for (const p of parts)
    c.append(el("li", {}, el("button", { onclick: () => openDir(p.path) }, p.name)));
}

/** Row `index` of the folder shown, if it is at hand (undefined while its page is fetched). */
function rowAt(index) {
  const l = model.list;
  if (l.all) return l.all[index];
  return cacheRow(l.cache, index) ?? (l.stale ? cacheRow(l.stale, index) : undefined);
}

/** The rows in the page: index -> <tr>, for the rows start..end-1 in view. */
const shown = new Map();
/** Rows' height in pixels, as measured (0 until measured). */
let rowHeight = 0;

function geometry() {
  const sc = $("files-scroll");
  // The header row sticks to the top of the viewport: rows show below it.
  const head = $("files").tHead?.getBoundingClientRect().height || 0;
  const h = rowHeight || head || 36;
  return {
    scrollTop: sc.scrollTop,
    viewportHeight: Math.max(0, sc.clientHeight - head),
    rowHeight: h,
    total: model.list.total ?? 0,
    overscan: OVERSCAN,
  };
}

/** The file-type icon of an entry: the icon theme's, or a drawn one until (or unless) it has one. */
function typeIcon(e) {
  const type = fileType(e);
  const url = model.icons.get(type.icon);
  if (url) return el("img", { class: "ftype", src: url, alt: "", "aria-hidden": "true" });
  if (!model.icons.has(type.icon)) wantIcon(type.icon);
  return el("span", { class: `ftype ${type.kind}`, "aria-hidden": "true" });
}

let iconWanted = new Set();
let iconTimer = 0;
/** Asks the Rust side for the theme's icons (batched): rows drawn meanwhile get them on the next render. */
function wantIcon(name) {
  iconWanted.add(name);
  if (iconTimer) return;
  iconTimer = setTimeout(async () => {
    const names = [...iconWanted];
    iconWanted = new Set();
    iconTimer = 0;
    for (const n of names) model.icons.set(n, null);
    let got = {};
    try {
      got = await api.icons(names);
    } catch {
      return; // drawn icons stay
    }
    for (const [n, url] of Object.entries(got)) model.icons.set(n, url);
    if (Object.keys(got).length) {
      for (const [i, tr] of shown) {
        tr.remove();
        shown.delete(i);
      }
      scheduleFrame();
    }
  }, 30);
}


// A row's state: its icon and words, cut with an ellipsis when the column is too narrow (the
// whole text is the tooltip).
function stateCell(d) {
  // TRANSLATORS: a file's state and its detail ("Partly on this device · 42 %").
  const words = d.detail ? t("{state} · {detail}", { state: d.words, detail: d.detail }) : d.words;
  return el("span", { class: "state", title: words },
    el("span", { class: `icon ${d.icon}`, "aria-hidden": "true" }),
    el("span", { class: "words" }, words));
}
function fileRow(index, e, sel) {
  const d = describe(e);
  const name = e.path.split("/").pop();
  const tr = el(
    "tr",
    {
      "data-path": e.path,
      "data-index": index,
      "data-state": e.state,
      "aria-rowindex": index + 2,
      "aria-selected": sel ? "true" : "false",
      tabindex: "-1",
    },
    el("td", { class: "sel" }, el("input", {
      type: "checkbox",
      checked: sel,
      "aria-label": t("Select {name}", { name }),
      onchange: (ev) => select(e, ev.target.checked),
    })),
    el("td", { class: "name", title: fileType(e).words }, el("span", { class: "namecell" }, typeIcon(e), e.kind === "dir"
      ? el("button", { onclick: () => openDir(e.path) }, `${name}/`)
      : name)),
    el("td", {}, stateCell(d)),
    el("td", { class: "num" }, e.kind === "dir" ? "" : formatBytes(e.size)),
    el("td", { class: "date" }, formatDate(e.mtime)),
  );
  tr._entry = e;
  tr._sel = sel;
  return tr;
}

/** A row whose page is being fetched. */
function loadingRow(index) {
  return el("tr", { class: "loading", "data-index": index, "aria-rowindex": index + 2, "aria-busy": "true", tabindex: "-1" },
    el("td", { class: "sel" }), el("td", { class: "name" }, "…"), el("td"), el("td", { class: "num" }), el("td", { class: "date" }));
}

function markSelected(tr, sel) {
  tr._sel = sel;
  tr.setAttribute("aria-selected", sel ? "true" : "false");
  const box = tr.querySelector("input[type=checkbox]");
  if (box) box.checked = sel;
}

function setPad(tbody, px) {
  tbody.hidden = !(px > 0);
  tbody.rows[0].cells[0].style.height = `${Math.max(0, px)}px`;
}

/** The entry when exactly one is selected by "all but" (if its row is at hand). */
function onlySelected() {
  const l = model.list;
  const n = Math.min(l.total ?? 0, l.all ? l.all.length : PAGE * MAX_PAGES);
  for (let i = 0; i < n; i++) {
    const e = rowAt(i);
    if (e && isSelected(model.sel, e.path)) return e;
  }
  return undefined;
}

/**
 * Puts the rows in view in the page, and only them: rows that left the view go, rows that came
 * in are added, rows whose entry changed are replaced, and a row whose selection changed is
 * updated in place (so the keyboard focus stays). Two spacers above and below give the
 * scrollbar the height of every row.
 */
function renderFiles() {
  const l = model.list;
  const total = l.total ?? 0;
  const g = geometry();
  const { start, end } = visibleRange(g);
  const body = $("file-rows");
  const hadFocus = body.contains(document.activeElement);
  for (const [i, tr] of shown) {
    if (i < start || i >= end) {
      tr.remove();
      shown.delete(i);
    }
  }
  let prev = null;
  for (let i = start; i < end; i++) {
    const e = rowAt(i);
    const sel = !!e && isSelected(model.sel, e.path);
    let tr = shown.get(i);
    if (!tr || tr._entry !== e) {
      const next = e ? fileRow(i, e, sel) : loadingRow(i);
      if (tr) tr.replaceWith(next);
      tr = next;
      shown.set(i, tr);
    } else if (e && tr._sel !== sel) markSelected(tr, sel);
    const want = prev ? prev.nextSibling : body.firstChild;
    if (tr !== want) body.insertBefore(tr, want);
    prev = tr;
  }
  setPad($("rows-above"), start * g.rowHeight);
  setPad($("rows-below"), (total - end) * g.rowHeight);
  $("files").setAttribute("aria-rowcount", String(total + 1));
  $("files-empty").hidden = l.total !== 0;
  const n = selectedCount(model.sel, total);
  const all = $("select-all");
  all.checked = total > 0 && n === total;
  all.indeterminate = n > 0 && n < total;
  const acts = actionsForSelection(model.sel, total, onlySelected);
  for (const b of document.querySelectorAll(".toolbar [data-action]"))
    b.disabled = !acts.includes(b.dataset.action);
  if (hadFocus && !body.contains(document.activeElement))
    (shown.get(model.focus) ?? $("files-scroll")).focus({ preventScroll: true });
  measure(start, end);
}

/** Measures the rows' height (it follows the font size and scaling); renders again if it changed. */
function measure(start, end) {
  if (end - start < 2) return;
  const a = shown.get(start)?.getBoundingClientRect();
  const b = shown.get(end - 1)?.getBoundingClientRect();
  if (!a || !b) return;
  const pitch = (b.top - a.top) / (end - 1 - start);
  if (pitch > 0 && Math.abs(pitch - rowHeight) > 0.05) {
    rowHeight = pitch;
    scheduleFrame();
  }
}

let frame = 0;
/** Renders the rows in view and fetches their pages, once per animation frame. */
function scheduleFrame() {
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    renderFiles();
    ensurePages();
  });
}

/** A path as users think of it: below its sync folder. */
function shortPath(p) {
  const r = model.roots.find((x) => p === x.local || p.startsWith(`${x.local}/`));
  return r ? `${r.local.split("/").pop()}/${p.slice(r.local.length + 1)}` : p;
}

let activityTick = 0;

function renderActivity() {
  const list = $("transfers");
  list.replaceChildren();
  const live = Object.values(model.transfers).filter((x) => !x.finished);
  for (const x of live) {
    // TRANSLATORS: a transfer's file and the program it is for (its name and process id).
    const what = x.app ? t("{path} · for {app} (pid {pid})", { path: shortPath(x.path), app: x.app, pid: x.pid })
      : shortPath(x.path);
    list.append(el("li", { "data-path": x.path },
      el("span", { class: "grow", title: x.path }, `${x.direction === "up" ? "↑" : "↓"} ${what}`),
      el("progress", { max: x.total || 1, value: x.done }),
      el("span", { class: "muted rate" }, transferText(x, Date.now())),
      x.app ? el("button", { onclick: () => blockApp(x.app) }, t("Never let {app} download", { app: x.app })) : "",
    ));
  }
  $("transfers-empty").hidden = live.length > 0;
  // While bytes move, the rates are redrawn each second (a stalled transfer says so).
  clearTimeout(activityTick);
  if (live.length) activityTick = setTimeout(() => { renderActivity(); renderSummary(); }, 1000);
  const badge = $("activity-count");
  badge.hidden = live.length === 0;
  badge.textContent = String(live.length);
  $("conflicts").replaceChildren(...model.conflicts.map((c) => el("li", {},
    el("span", { class: "grow", title: `${c.path} ⇄ ${c.copy}` }, `${shortPath(c.path)} ⇄ ${shortPath(c.copy)}`),
    el("button", { onclick: () => { api.openPath(c.path); api.openPath(c.copy); } }, t("Open both")),
  )));
  $("conflicts-empty").hidden = model.conflicts.length > 0;
  $("errors").replaceChildren(...model.errors.map((e) => el("li", {},
    // TRANSLATORS: a problem with a file: its path, then what the daemon said.
    el("span", { class: "grow", title: e.path || "" }, errorText(e.code, e.path ? t("{path}: {message}", { path: shortPath(e.path), message: e.message }) : e.message)))));
  $("errors-empty").hidden = model.errors.length > 0;
  $("done").replaceChildren(...model.done.slice(0, 20).map((x) => el("li", {},
    el("span", { class: "grow", title: x.path }, `${x.direction === "up" ? "↑" : "↓"} ${shortPath(x.path)}`),
    el("span", { class: "muted" }, formatBytes(x.total)))));
}

async function renderSettings() {
  const s = model.settings;
  if (!s) return;
  $("accounts").replaceChildren(...model.roots.map((r) => el("li", { "data-root": r.local },
    el("span", { class: "grow", title: r.local }, needsSignIn(r)
      // TRANSLATORS: an account: its local folder, the server's address, and that it needs signing in again.
      ? t("{folder} ← {remote} (needs sign-in)", { folder: homeRelative(r.local, model.home), remote: r.remote })
      : `${homeRelative(r.local, model.home)} ← ${r.remote}`),
    el("button", { onclick: () => removeRoot(r.local) }, t("Remove…")),
  )));
  $("budgets").replaceChildren(...model.roots.map((r) => el("label", { title: r.local },
    // TRANSLATORS: a sync folder's disk budget: its name and path, then the field ({input}) for the size or percentage.
    ...tParts("{name} ({path}): keep at most {input}", {
      name: displayName(r.local),
      path: homeRelative(r.local, model.home),
      input: el("input", {
        "data-budget": r.local,
        placeholder: t("no limit"),
        value: r.budget?.max_bytes ? sizeText(r.budget.max_bytes) : r.budget?.keep_free_percent ? `${r.budget.keep_free_percent}%` : "",
      }),
    }))));
  $("set-download").value = s.download_limit ? sizeText(s.download_limit) : "";
  $("set-upload").value = s.upload_limit ? sizeText(s.upload_limit) : "";
  $("set-poll").value = s.poll_interval_secs;
  $("never").replaceChildren(...s.never_download.map((p) => el("li", {},
    el("span", { class: "grow" }, p),
    el("button", { onclick: () => setNever(s.never_download.filter((x) => x !== p)) }, t("Remove")))));
  $("set-autostart").checked = await api.autostartEnabled();
}

// ------------------------------------------------------------------ actions

function select(entry, on) {
  model.sel = setSelected(model.sel, entry, on);
  renderFiles();
}

/** The pages the rows in view are on (the first page while the folder's size is unknown). */
function pagesInView(l) {
  return pagesFor(visibleRange({ ...geometry(), total: l.total ?? PAGE }), PAGE);
}

/** The order and filter the daemon lists the folder in. */
function pageOrder() {
  const o = model.order;
  return { sort: o.sort, descending: o.descending, filter: o.filter || null };
}

/** The folder shown again from its top in the order (or with the filter) now chosen. */
function reorder() {
  model.list = listing("");
  renderHeaders();
  return openDir(model.dir, true);
}

/** The column headers say how the folder is sorted (`aria-sort`, and an arrow). */
function renderHeaders() {
  for (const th of document.querySelectorAll("#files th[data-sort]")) {
    const v = ariaSort(model.order, th.dataset.sort);
    th.setAttribute("aria-sort", v);
    th.querySelector(".arrow").textContent = v === "ascending" ? "▲" : v === "descending" ? "▼" : "";
  }
}

/** Fetches page `p` of listing `l` into its cache; an answer for an older refresh is dropped. */
async function fetchPage(l, p) {
  const { gen, loading } = l;
  loading.add(p);
  try {
    const r = await api.listPage(l.dir, p * PAGE, PAGE, pageOrder());
    if (model.list !== l || l.gen !== gen) return;
    l.cache = cachePut(l.cache, p, l.events.size ? applyStates(r.entries, l.events).entries : r.entries);
    l.total = r.total;
  } catch (e) {
    if (model.list === l && l.gen === gen) throw e;
  } finally {
    loading.delete(p);
    if (!l.loading.size && !l.listing) l.events.clear();
  }
}

/** Every entry of listing `l` (`list`, without paging). */
async function fetchAll(l) {
  const gen = l.gen;
  l.listing = true;
  try {
    const all = await api.list(l.dir);
    if (model.list !== l || l.gen !== gen) return;
    l.all = l.events.size ? applyStates(all, l.events).entries : all;
    l.total = all.length;
  } finally {
    l.listing = false;
    if (!l.loading.size) l.events.clear();
  }
}

/** Fetches the pages in view that are missing (a few at a time: more when each arrives). */
function ensurePages() {
  const l = model.list;
  if (!paged || !l.dir || l.all || l.total === 0) return;
  const need = pagesInView(l);
  l.cache = cacheTouch(l.cache, need);
  const room = Math.max(0, MAX_LOADING - l.loading.size);
  for (const p of pagesToFetch(need, l.cache, l.loading).slice(0, room))
    fetchPage(l, p).then(scheduleFrame, (e) => pageFailed(l, e));
}

/** A page fetched while scrolling failed: say so (scrolling fetches it again). */
function pageFailed(l, e) {
  if (model.list !== l) return;
  if (api.isUnknownCommand(e)) {
    paged = false;
    openDir(l.dir);
  } else if ((e.code === "not_found" || e.code === "not_a_root") && model.root && l.dir !== model.root) {
    openDir(model.root);
  } else $("files-message").textContent = problem(e);
}

/**
 * Shows folder `path`. Another folder starts at its top with nothing selected; the folder
 * shown is refreshed where it is (scroll position and selection kept; only the pages in view
 * are fetched again, the rest of the cache is dropped). Resolves once the rows in view are
 * there.
 */
async function openDir(path, keepFilter = false) {
  cancelRefresh();
  let l = model.list;
  if (path !== l.dir) {
    if (!keepFilter && model.order.filter && path !== model.dir) {
      // Another folder: the filter was for the one before.
      model.order = { ...model.order, filter: "" };
      $("filter").value = "";
    }
    model.dir = path;
    model.anchor = -1;
    l = model.list = listing(path);
    model.sel = selection();
    model.focus = -1;
    $("files-scroll").scrollTop = 0;
    renderFiles();
  } else {
    l.gen += 1;
    l.loading = new Set();
    if (l.cache.pages.size) l.stale = l.cache;
    l.cache = pageCache(MAX_PAGES, PAGE);
  }
  const gen = l.gen;
  const current = () => model.list === l && l.gen === gen;
  try {
    if (paged) {
      try {
        await Promise.all(pagesToFetch(pagesInView(l), l.cache, l.loading).map((p) => fetchPage(l, p)));
      } catch (e) {
        if (!api.isUnknownCommand(e)) throw e;
        paged = false; // an older Rust side: the whole folder, rendered virtually all the same
        if (current()) await fetchAll(l);
      }
    } else await fetchAll(l);
    if (!current()) return;
    $("files-message").textContent = "";
  } catch (e) {
    if (!current()) return;
    // The folder went away (deleted, renamed): back to the top of its sync folder.
    if ((e.code === "not_found" || e.code === "not_a_root") && model.root && path !== model.root)
      return openDir(model.root);
    l.total = 0;
    l.all = null;
    l.cache = pageCache(MAX_PAGES, PAGE);
    $("files-message").textContent = problem(e);
  }
  l.stale = null;
  renderCrumbs();
  renderFiles();
  ensurePages();
}

let refreshTimer = 0;
let refreshFirst = 0;
/** Daemon events changed the folder shown: fetch its rows in view again, once things calm down. */
function scheduleRefresh() {
  const now = Date.now();
  if (!refreshTimer) refreshFirst = now;
  clearTimeout(refreshTimer);
  const wait = Math.max(0, Math.min(REFRESH_WAIT, refreshFirst + REFRESH_MAX_WAIT - now));
  refreshTimer = setTimeout(() => {
    refreshTimer = 0;
    if (model.dir) openDir(model.dir);
    renderStorage();
  }, wait);
}

function cancelRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = 0;
}

/** The selected paths; for "all but", every path of the folder is fetched first. */
async function selectedPaths(l, sel) {
  if (!sel.all) return [...sel.paths.keys()];
  let paths = [];
  if (l.all) paths = l.all.map((e) => e.path);
  else if (!paged) paths = (await api.list(l.dir)).map((e) => e.path);
  else {
    for (let off = 0; ; ) {
      const r = await api.listPage(l.dir, off, BULK, pageOrder());
      for (const e of r.entries) paths.push(e.path);
      off += r.entries.length;
      if (!r.entries.length || off >= r.total) break;
    }
  }
  return selectedAmong(sel, paths);
}

async function act(action) {
  const l = model.list;
  const sel = model.sel;
  if (!selectedCount(sel, l.total ?? 0)) return;
  const msg = $("files-message");
  let said;
  try {
    if (action === "open") return await api.openPath((await selectedPaths(l, sel))[0]);
    if (action === "reveal") return await api.reveal((await selectedPaths(l, sel))[0]);
    msg.textContent = t("Working…");
    const paths = await selectedPaths(l, sel);
    const r = await api.act(action, paths);
    // TRANSLATORS: what an action did: how many files, how many bytes.
    said = tn("{n} file, {size}.", "{n} files, {size}.", r.files, { size: formatBytes(r.bytes) });
    // TRANSLATORS: files the action left alone, and why (the first one's reason, in the daemon's words).
    if (r.skipped?.length) said += ` ${tn("{n} skipped: {reason}", "{n} skipped: {reason}", r.skipped.length, { reason: r.skipped[0].reason })}`;
  } catch (e) {
    said = problem(e);
  }
  model.sel = selection(); // done with: the rows show what it did
  renderStorage();
  await openDir(model.dir);
  // The listing clears the message: say how it went after it (unless the listing failed).
  if (!msg.textContent) msg.textContent = said;
}

async function blockApp(app) {
  const s = await api.configGet();
  if (!s.settings.never_download.includes(app)) await setNever([...s.settings.never_download, app]);
}

async function setNever(list) {
  await api.configSet("never_download", list);
  await refreshSettings();
}

async function removeRoot(local) {
  if (!confirm(t("Stop syncing {folder}? Files that are on this device stay; online-only files go.", { folder: local }))) return;
  try {
    await api.removeRoot(local, "keep_local");
  } catch (e) {
    $("settings-message").textContent = problem(e);
  }
  await refreshRoots();
}

async function refreshSettings() {
  const c = await api.configGet();
  model.settings = c.settings;
  await renderSettings();
}

/** The roots' states only (no re-listing of the open folder). */
async function refreshRootStates() {
  try {
    model.roots = await api.roots();
  } catch {
    return; // the banner or the next full refresh tells
  }
  renderSummary();
}

/** The roots, settings and folder shown; after a daemon event (`fromEvent`) the folder's rows are re-fetched debounced. */
async function refreshRoots(fromEvent = false) {
  try {
    model.roots = await api.roots();
  } catch (e) {
    model.roots = [];
    // An unreachable daemon is told by the banner (the connection); anything else here.
    if (e.code !== "unreachable") $("files-message").textContent = problem(e);
  }
  if (!model.roots.some((r) => r.local === model.root)) {
    model.root = model.roots[0]?.local || null;
    model.dir = model.root || "";
  }
  renderRoots();
  renderStorage();
  renderSummary();
  await renderSettings();
  if (model.root) {
    if (fromEvent && model.dir === model.list.dir) scheduleRefresh();
    else await openDir(model.dir);
  } else {
    model.list = listing("");
    model.list.total = 0;
    model.sel = selection();
    renderCrumbs();
    renderFiles();
  }
  if (model.connected && model.roots.length === 0) openWizard();
}

async function saveSettings() {
  const m = $("settings-message");
  try {
    await api.configSet("download_limit", $("set-download").value || "0");
    await api.configSet("upload_limit", $("set-upload").value || "0");
    await api.configSet("poll_interval", $("set-poll").value);
    for (const i of document.querySelectorAll("[data-budget]"))
      await api.configSet("budget", i.value.trim() || "none", i.dataset.budget);
    await api.setAutostart($("set-autostart").checked);
    m.textContent = t("Saved.");
  } catch (e) {
    m.textContent = problem(e);
  }
  await refreshSettings();
}

// ------------------------------------------------------------------ wizard

/** "~/Cloud" typed in the wizard is the home folder's Cloud. */
function expandHome(p) {
  if (p === "~") return model.home;
  return p.startsWith("~/") ? `${model.home}${p.slice(1)}` : p;
}

const wiz = { steps: [], at: 0 };

function wizardSteps() {
  const kind = document.querySelector("input[name=kind]:checked").value;
  return ["kind", kind, "test", "folder", "done"];
}

function showStep() {
  wiz.steps = wizardSteps();
  const name = wiz.steps[wiz.at];
  for (const s of document.querySelectorAll("#wizard .step")) s.hidden = s.dataset.step !== name;
  $("w-back").hidden = wiz.at === 0 || name === "done";
  $("w-cancel").hidden = name === "done" || model.roots.length === 0;
  $("w-next").textContent = name === "folder" ? t("Set up") : name === "done" ? t("Done") : t("Next");
  $("w-error").textContent = "";
  if (name === "webdav") updateResolved();
  // Keyboard users land on what the step asks for: the chosen kind, the first field, the
  // test button, or Next.
  const step = document.querySelector(`#wizard .step[data-step="${name}"]`);
  const first = step?.querySelector("input[type=radio]:checked, input:not([type=radio]), button");
  (first ?? $("w-next")).focus();
}

function updateResolved() {
  const r = recognizeServer($("w-url").value, $("w-user").value);
  $("w-resolved").textContent = r.url || "—";
  $("w-nextcloud").hidden = !r.nextcloud;
}

function wizardForm() {
  const kind = wiz.steps[1];
  if (kind === "webdav") {
    const r = recognizeServer($("w-url").value, $("w-user").value);
    if (r.error) return { error: r.error };
    return { kind, url: r.url, user: $("w-user").value.trim() || null, secret: $("w-pass").value || null };
  }
  const s = s3Url({ bucket: $("s-bucket").value, prefix: $("s-prefix").value });
  if (s.error) return { error: s.error };
  const key = $("s-key").value.trim();
  const secret = $("s-secret").value;
  return {
    kind,
    url: s.url,
    endpoint: $("s-endpoint").value.trim() || null,
    region: $("s-region").value.trim() || null,
    path_style: $("s-path-style").checked,
    user: null,
    secret: key || secret ? `${key}:${secret}` : null,
  };
}

async function wizardNext() {
  const name = wiz.steps[wiz.at];
  const err = $("w-error");
  if (name === "webdav" || name === "s3") {
    const f = wizardForm();
    if (f.error) return (err.textContent = f.error);
  }
  if (name === "test") {
    if ($("w-test-result").dataset.ok !== "true") return (err.textContent = t("Test the connection first."));
  }
  if (name === "folder") {
    const folder = expandHome($("w-folder").value.trim());
    const bad = checkFolder(folder, model.home);
    if (bad) return (err.textContent = bad);
    $("w-next").disabled = true;
    try {
      const r = await api.addAccount(wizardForm(), folder);
      // TRANSLATORS: the account is set up: {files} is "3 files", {folders} "2 folders", {folder} the local folder.
      $("w-done").textContent = t("Done: {files} and {folders} are in {folder}, online-only. They download when you open them.", {
        files: tn("{n} file", "{n} files", r.files),
        folders: tn("{n} folder", "{n} folders", r.dirs),
        folder: homeRelative(folder, model.home),
      });
      model.root = folder;
      model.dir = folder;
    } catch (e) {
      $("w-next").disabled = false;
      return (err.textContent = problem(e));
    }
    $("w-next").disabled = false;
  }
  if (name === "done") {
    $("wizard").close();
    return refreshRoots();
  }
  wiz.at += 1;
  showStep();
}

async function testConnection() {
  const out = $("w-test-result");
  const f = wizardForm();
  out.dataset.ok = "false";
  if (f.error) return (out.textContent = f.error);
  out.textContent = t("Testing…");
  try {
    out.textContent = await api.testConnection(f);
    out.dataset.ok = "true";
    $("w-next").focus();
  } catch (e) {
    out.textContent = problem(e);
  }
}

function openWizard() {
  const w = $("wizard");
  if (w.open) return;
  wiz.at = 0;
  $("w-folder").value = "~/Cloud";
  $("w-done").textContent = "";
  $("w-test-result").textContent = "";
  $("w-test-result").dataset.ok = "false";
  showStep();
  w.showModal();
}

// ------------------------------------------------------------------ daemon events

let pendingStates = new Map();
let statesTimer = 0;

/**
 * State events for entries of the folder shown, applied together (a job over a big folder
 * sends one per file): rows at hand change in place; an entry not at hand is new or on a page
 * not fetched, so the rows in view are fetched again (debounced).
 */
function flushStates() {
  statesTimer = 0;
  const evs = pendingStates;
  pendingStates = new Map();
  const l = model.list;
  for (const p of evs.keys()) if (parentOf(p) !== l.dir) evs.delete(p);
  if (!evs.size) return;
  let matched;
  if (l.all) {
    const r = applyStates(l.all, evs);
    l.all = r.entries;
    matched = r.matched;
  } else {
    const r = cacheApply(l.cache, evs);
    l.cache = r.cache;
    matched = r.matched;
    if (l.stale) l.stale = cacheApply(l.stale, evs).cache;
  }
  if (matched.size < evs.size) scheduleRefresh();
  if (matched.size) renderFiles();
}

/** What each daemon event does to the window (api.js decodes them). */
const daemonEvents = {
  state(ev) {
    const l = model.list;
    if (l.dir && parentOf(ev.path) === l.dir) {
      pendingStates.set(ev.path, ev);
      if (l.loading.size || l.listing) l.events.set(ev.path, ev);
      if (!statesTimer) statesTimer = setTimeout(flushStates, 30);
    }
    // A download ends when its file is complete.
    const x = model.transfers[ev.path];
    if (x && (ev.state === "local" || ev.state === "pinned")) {
      model.done.unshift({ ...x, done: x.total, finished: true });
      delete model.transfers[ev.path];
      renderActivity();
      renderSummary();
    }
  },
  progress(ev) {
    model.transfers = applyProgress(model.transfers, ev, Date.now());
    const x = model.transfers[ev.path];
    if (x.finished) {
      model.done.unshift(x);
      delete model.transfers[ev.path];
    }
    renderActivity();
    renderSummary();
  },
  conflict(ev) {
    model.conflicts.unshift(ev);
    renderActivity();
    renderSummary();
  },
  error(ev) {
    model.errors.unshift(ev);
    model.errors = model.errors.slice(0, 50);
    renderActivity();
    refreshRoots(true);
  },
  root(ev) {
    // A pass starting or ending changes only the root's state: the summary shows it; the
    // folder listing (and any row being clicked) stays as it is.
    if (ev.change === "state") refreshRootStates();
    else refreshRoots(true);
  },
  lagged() {
    // Events were missed: the rows in view are fetched again.
    if (model.dir) scheduleRefresh();
  },
};

function onConnection(c) {
  model.connected = c.connected;
  renderBanner(c.connected ? null : c.message);
  renderSummary();
  if (c.connected) {
    refreshRoots();
    refreshSettings();
  }
}

// ------------------------------------------------------------------ storage overview

let storageGen = 0;
/**
 * The sync folder's storage at a glance (above its files): a bar of what is on this device
 * and what is online-only, the budget's mark, the free space on its disk and its largest
 * local folders. Asked again when the root or its files change (debounced with the rows).
 */
async function renderStorage() {
  const box = $("storage");
  const root = model.roots.find((r) => r.local === model.root);
  if (!root) {
    box.hidden = true;
    return;
  }
  const gen = ++storageGen;
  let st;
  let free = null;
  let top = [];
  try {
    [st, free] = await Promise.all([api.status(root.local), api.freeSpace(root.local).catch(() => null)]);
    const page = await api.listPage(root.local, 0, 200, { sort: "name", descending: false, filter: null });
    top = page.entries.filter((e) => e.kind === "dir" && e.local_bytes > 0)
      .sort((a, b) => b.local_bytes - a.local_bytes).slice(0, 3);
  } catch {
    if (gen === storageGen) box.hidden = true;
    return;
  }
  if (gen !== storageGen) return;
  const budget = root.budget?.max_bytes ? { max_bytes: root.budget.max_bytes }
    : root.budget?.keep_free_percent ? { keep_free_percent: root.budget.keep_free_percent } : null;
  const v = storage(st, budget, free ?? NaN);
  const bar = $("storage-bar");
  bar.replaceChildren(...v.parts.map((p) => el("span", { class: p.kind, style: `width: ${p.percent}%`, title: p.words })));
  // TRANSLATORS: the tooltip of the budget's mark on the storage bar.
  if (v.budgetPercent !== null) bar.append(el("span", { class: "budget", style: `left: ${v.budgetPercent}%`, title: t("budget") }));
  bar.setAttribute("aria-label", v.summary);
  $("storage-summary").textContent = v.summary;
  $("storage-largest").textContent = top.length
    // TRANSLATORS: the folders that take the most room on this device, each with its size ("Photos 2.1 GB, Music 1.0 GB").
    ? `· ${t("largest here: {folders}", { folders: formatList(top.map((e) => `${displayName(e.path)} ${formatBytes(e.local_bytes)}`)) })}` : "";
  $("storage-free").disabled = !st.local_bytes;
  box.hidden = false;
}

async function freeRoot() {
  if (!model.root) return;
  const msg = $("files-message");
  msg.textContent = t("Freeing up space…");
  try {
    const r = await api.act("free", [model.root]);
    msg.textContent = tn("{n} file, {size} freed.", "{n} files, {size} freed.", r.files, { size: formatBytes(r.bytes) });
  } catch (e) {
    msg.textContent = problem(e);
  }
  renderStorage();
  openDir(model.dir);
}

// ------------------------------------------------------------------ rows: mouse and menu

/** The entry of the row an event happened in, and its index. */
function rowOf(ev) {
  const tr = ev.target.closest?.("#file-rows tr[data-index]");
  if (!tr) return null;
  const index = Number(tr.dataset.index);
  const e = rowAt(index);
  return e ? { index, e, tr } : null;
}

/** The entries of rows start..end-1 (fetched as pages where they are not at hand). */
async function entriesIn({ start, end }) {
  const out = [];
  for (let i = start; i < end; ) {
    const e = rowAt(i);
    if (e) {
      out.push(e);
      i++;
      continue;
    }
    const r = await api.listPage(model.list.dir, i, Math.min(BULK, end - i), pageOrder());
    if (!r.entries.length) break;
    out.push(...r.entries);
    i += r.entries.length;
  }
  return out;
}

/**
 * A click on a row (not on its box or its folder button): selects that row alone; with Ctrl,
 * adds or removes it; with Shift, selects from the last row clicked to this one.
 */
async function rowClick(ev) {
  if (ev.target.closest("input, button")) return;
  const r = rowOf(ev);
  if (!r) return;
  model.focus = r.index;
  if (ev.shiftKey) {
    const range = rangeOf(model.anchor, r.index);
    model.sel = selectAll(ev.ctrlKey ? model.sel : selection(), await entriesIn(range));
  } else if (ev.ctrlKey || ev.metaKey) {
    model.sel = setSelected(model.sel, r.e, !isSelected(model.sel, r.e.path));
    model.anchor = r.index;
  } else {
    model.sel = setSelected(selection(), r.e, true);
    model.anchor = r.index;
  }
  renderFiles();
  shown.get(r.index)?.focus({ preventScroll: true });
}

/** Double-click: a folder opens in the view, a file with its default program. */
function rowOpen(ev) {
  if (ev.target.closest("input")) return;
  const r = rowOf(ev);
  if (!r) return;
  if (r.e.kind === "dir") openDir(r.e.path);
  else api.openPath(r.e.path).catch((e) => ($("files-message").textContent = problem(e)));
}

/** Opens the row menu at (x, y) for the selection (the row under the pointer joins it, alone, if it was not selected). */
function openMenu(x, y, r) {
  if (r && !isSelected(model.sel, r.e.path)) {
    model.sel = setSelected(selection(), r.e, true);
    model.anchor = r.index;
    renderFiles();
  }
  const total = model.list.total ?? 0;
  const acts = actionsForSelection(model.sel, total, onlySelected);
  if (!acts.length) return;
  const m = $("row-menu");
  for (const b of m.querySelectorAll("[data-action]")) b.hidden = !acts.includes(b.dataset.action);
  m.hidden = false;
  const w = m.offsetWidth;
  const h = m.offsetHeight;
  m.style.left = `${Math.max(0, Math.min(x, innerWidth - w - 4))}px`;
  m.style.top = `${Math.max(0, Math.min(y, innerHeight - h - 4))}px`;
  m.querySelector("[data-action]:not([hidden])")?.focus();
}

function closeMenu(refocus = true) {
  const m = $("row-menu");
  if (m.hidden) return;
  m.hidden = true;
  if (refocus) (shown.get(model.focus) ?? $("files-scroll")).focus({ preventScroll: true });
}

function menuKeys(ev) {
  const items = [...$("row-menu").querySelectorAll("[data-action]:not([hidden])")];
  const i = items.indexOf(document.activeElement);
  if (ev.key === "Escape" || ev.key === "Tab") {
    closeMenu();
    ev.preventDefault();
  } else if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
    const n = items.length;
    items[(i + (ev.key === "ArrowDown" ? 1 : n - 1)) % n]?.focus();
    ev.preventDefault();
  } else if (ev.key === "Home" || ev.key === "End") {
    items[ev.key === "Home" ? 0 : items.length - 1]?.focus();
    ev.preventDefault();
  }
}

let filterTimer = 0;
/** Typing in the filter lists the folder again, filtered by the daemon (debounced). */
function filterInput() {
  clearTimeout(filterTimer);
  filterTimer = setTimeout(() => {
    const f = $("filter").value.trim();
    if (f === model.order.filter) return;
    model.order = { ...model.order, filter: f };
    reorder();
  }, 200);
}

// ------------------------------------------------------------------ wiring

function showView(name) {
  for (const tab of document.querySelectorAll("nav [role=tab]")) {
    const on = tab.dataset.view === name;
    tab.setAttribute("aria-selected", on ? "true" : "false");
    tab.tabIndex = on ? 0 : -1;
    $(`view-${tab.dataset.view}`).hidden = !on;
  }
  if (name === "files") scheduleFrame();
}

/** Gives row `index` the keyboard focus, scrolling it into view (and into the page). */
function focusRow(index) {
  model.focus = index;
  const sc = $("files-scroll");
  const top = scrollToRow(index, geometry());
  if (top !== sc.scrollTop) sc.scrollTop = top;
  renderFiles();
  ensurePages();
  shown.get(index)?.focus({ preventScroll: true });
}


// How many lines the Files toolbar takes (1 in every language; the window reports it when drawn).
function toolbarLines() {
  const boxes = [...document.querySelectorAll("#view-files .toolbar > *")]
    .map((e) => e.getBoundingClientRect())
    .filter((r) => r.height > 0);
  let lines = 0;
  let bottom = -Infinity;
  for (const r of boxes) {
    if (r.top >= bottom) lines++;
    bottom = r.top >= bottom ? r.bottom : Math.max(bottom, r.bottom);
  }
  return lines;
}
function keyboard(ev) {
  const sc = $("files-scroll");
  const active = document.activeElement;
  const tr = active?.closest?.("#file-rows tr");
  const i = tr ? Number(tr.dataset.index) : -1;
  const onRow = !!tr && active === tr;
  const total = model.list.total ?? 0;
  const g = geometry();
  const screen = Math.max(1, Math.floor(g.viewportHeight / g.rowHeight) - 1);
  const moves = { ArrowDown: 1, ArrowUp: -1, PageDown: screen, PageUp: -screen, Home: -total, End: total };
  if (ev.key in moves) {
    // Arrows from anywhere in the list (the select-all box too); the others from a row or the list.
    if (!total || (!ev.key.startsWith("Arrow") && !tr && active !== sc)) return;
    const first = Math.min(total - 1, Math.ceil(g.scrollTop / g.rowHeight));
    focusRow(i < 0 ? first : Math.max(0, Math.min(total - 1, i + moves[ev.key])));
    ev.preventDefault();
  } else if (ev.key === " " && onRow) {
    const e = rowAt(i);
    if (e) select(e, !isSelected(model.sel, e.path));
    ev.preventDefault();
  } else if ((ev.key === "ContextMenu" || (ev.key === "F10" && ev.shiftKey)) && onRow) {
    const r = tr.getBoundingClientRect();
    const e = rowAt(i);
    if (e) openMenu(r.left + 40, r.bottom, { index: i, e, tr });
    ev.preventDefault();
  } else if (ev.key === "Enter" && onRow) {
    const e = rowAt(i);
    if (e?.kind === "dir") openDir(e.path);
    else if (e) api.openPath(e.path);
  }
}

async function main() {
  // The desktop's language first: the page's words, then everything drawn after, are in it.
  setCatalogue(await api.catalogue());
  document.documentElement.lang = locale();
  translatePage();
  for (const tab of document.querySelectorAll("nav [role=tab]")) tab.addEventListener("click", () => showView(tab.dataset.view));
  for (const b of document.querySelectorAll(".toolbar [data-action]")) b.addEventListener("click", () => act(b.dataset.action));
  $("root-select").addEventListener("change", (e) => {
    model.root = e.target.value;
    openDir(model.root);
    renderStorage();
  });
  $("select-all").addEventListener("change", (e) => {
    model.sel = selection(e.target.checked);
    renderFiles();
  });
  for (const th of document.querySelectorAll("#files th[data-sort]"))
    th.querySelector("button").addEventListener("click", () => {
      model.order = { ...nextSort(model.order, th.dataset.sort), filter: model.order.filter };
      reorder();
    });
  $("filter").addEventListener("input", filterInput);
  $("filter").addEventListener("keydown", (e) => {
    if (e.key === "Escape" && $("filter").value) {
      $("filter").value = "";
      filterInput();
      e.stopPropagation();
    }
  });
  $("storage-free").addEventListener("click", freeRoot);
  const rows = $("file-rows");
  rows.addEventListener("click", rowClick);
  rows.addEventListener("dblclick", rowOpen);
  rows.addEventListener("contextmenu", (ev) => {
    const r = rowOf(ev);
    if (!r) return;
    ev.preventDefault();
    openMenu(ev.clientX, ev.clientY, r);
  });
  const menu = $("row-menu");
  menu.addEventListener("keydown", menuKeys);
  for (const b of menu.querySelectorAll("[data-action]"))
    b.addEventListener("click", () => {
      closeMenu();
      act(b.dataset.action);
    });
  document.addEventListener("mousedown", (ev) => { if (!menu.contains(ev.target)) closeMenu(false); });
  window.addEventListener("blur", () => closeMenu(false));
  const scroller = $("files-scroll");
  scroller.addEventListener("keydown", keyboard);
  scroller.addEventListener("scroll", () => { closeMenu(false); scheduleFrame(); }, { passive: true });
  new ResizeObserver(scheduleFrame).observe(scroller);
  $("file-rows").addEventListener("focusin", (e) => {
    const tr = e.target.closest("tr");
    if (tr) model.focus = Number(tr.dataset.index);
  });
  $("add-account").addEventListener("click", openWizard);
  $("save-settings").addEventListener("click", saveSettings);
  $("never-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const v = $("never-add").value.trim();
    if (v) setNever([...model.settings.never_download, v]);
    $("never-add").value = "";
  });
  // Next is the form's submit button, so Enter in a field goes on too (the dialog form
  // would otherwise close).
  $("wizard-form").addEventListener("submit", (e) => {
    e.preventDefault();
    wizardNext();
  });
  $("w-back").addEventListener("click", () => { wiz.at = Math.max(0, wiz.at - 1); showStep(); });
  $("w-cancel").addEventListener("click", () => $("wizard").close());
  $("w-test").addEventListener("click", testConnection);
  for (const id of ["w-url", "w-user"]) $(id).addEventListener("input", updateResolved);
  $("w-flow").addEventListener("click", async () => {
    try {
      const r = await api.nextcloudLogin($("w-url").value);
      $("w-user").value = r.user;
      $("w-pass").value = r.password;
      updateResolved();
    } catch (e) {
      $("w-error").textContent = problem(e);
    }
  });
  document.querySelector("#wizard").addEventListener("cancel", (e) => { if (!model.roots.length) e.preventDefault(); });
  model.home = await api.homeDir();
  await api.subscribe({ ...daemonEvents, connection: onConnection, view: showView });
  onConnection(await api.connection());
  renderActivity();
  // Ctrl+W closes the window, as in other desktop apps (the app stays in the tray).
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey && !e.altKey && !e.shiftKey && e.key.toLowerCase() === "w") {
      e.preventDefault();
      api.closeWindow().catch(() => {});
    }
  });
  requestAnimationFrame(() =>
    api.windowReady(document.documentElement.lang, document.getElementById("tab-files")?.textContent ?? "", toolbarLines()).catch(() => {}));
}

main();
