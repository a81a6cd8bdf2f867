// The Skyfill window: DOM glue between the Rust side, reached only through api.js (commands
// and events), and the pure logic (logic.js). Everything the daemon says arrives as events
// (decoded in api.js, handled by `daemonEvents` below) and connection changes; the window
// never polls the file list. Failed commands are ApiErrors: their code decides what to do,
// their message is shown.

import * as api from "./api.js";
import {
  sizeText,
  actionsFor,
  applyProgress,
  applyState,
  checkFolder,
  describe,
  errorText,
  formatBytes,
  formatRate,
  needsSignIn,
  overall,
  problem,
  recognizeServer,
  s3Url,
} from "./logic.js";

const $ = (id) => document.getElementById(id);

const model = {
  connected: false,
  roots: [],
  root: null, // the selected root (local path)
  dir: "", // absolute path of the folder shown
  entries: [],
  selected: new Set(),
  transfers: {},
  conflicts: [],
  errors: [],
  done: [],
  settings: null,
  home: "",
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
  const o = overall({
    connected: model.connected,
    roots: model.roots,
    transfers: model.transfers,
    pendingConflicts: model.conflicts.length,
  });
  $("summary").textContent = o.tooltip.replace(/^Skyfill: /, "");
  $("summary").dataset.state = o.icon;
}

function renderBanner(text) {
  const b = $("banner");
  b.hidden = !text;
  b.textContent = text || "";
}

function renderRoots() {
  const s = $("root-select");
  s.replaceChildren(...model.roots.map((r) => el("option", { value: r.local }, r.local)));
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

function renderFiles() {
  const body = $("file-rows");
  body.replaceChildren();
  for (const e of model.entries) {
    const d = describe(e);
    const sel = model.selected.has(e.path);
    const name = e.path.split("/").pop();
    const row = el(
      "tr",
      { "data-path": e.path, "data-state": e.state, "aria-selected": sel ? "true" : "false", tabindex: "-1" },
      el("td", { class: "sel" }, el("input", {
        type: "checkbox",
        checked: sel,
        "aria-label": `Select ${name}`,
        onchange: (ev) => select(e.path, ev.target.checked),
      })),
      el("td", { class: "name" }, e.kind === "dir"
        ? el("button", { onclick: () => openDir(e.path) }, `${name}/`)
        : name),
      el("td", {}, el("span", { class: "state", title: d.words },
        el("span", { class: `icon ${d.icon}`, "aria-hidden": "true" }),
        el("span", { class: "words" }, d.detail ? `${d.words} · ${d.detail}` : d.words))),
      el("td", { class: "num" }, e.kind === "dir" ? "" : formatBytes(e.size)),
    );
    body.append(row);
  }
  $("files-empty").hidden = model.entries.length > 0;
  $("select-all").checked = model.entries.length > 0 && model.selected.size === model.entries.length;
  const acts = actionsFor(model.entries.filter((e) => model.selected.has(e.path)));
  for (const b of document.querySelectorAll(".toolbar [data-action]"))
    b.disabled = !acts.includes(b.dataset.action);
}

/** A path as users think of it: below its sync folder. */
function shortPath(p) {
  const r = model.roots.find((x) => p === x.local || p.startsWith(`${x.local}/`));
  return r ? `${r.local.split("/").pop()}/${p.slice(r.local.length + 1)}` : p;
}

function renderActivity() {
  const t = $("transfers");
  t.replaceChildren();
  const live = Object.values(model.transfers).filter((x) => !x.finished);
  for (const x of live) {
    const who = x.app ? ` · for ${x.app} (pid ${x.pid})` : "";
    t.append(el("li", { "data-path": x.path },
      el("span", { class: "grow", title: x.path }, `${x.direction === "up" ? "↑" : "↓"} ${shortPath(x.path)}${who}`),
      el("progress", { max: x.total || 1, value: x.done }),
      el("span", { class: "muted" }, `${formatBytes(x.done)} of ${formatBytes(x.total)} · ${formatRate(x.rate)}${x.eta ? ` · ${x.eta} left` : ""}`),
      x.app ? el("button", { onclick: () => blockApp(x.app) }, `Never let ${x.app} download`) : "",
    ));
  }
  $("transfers-empty").hidden = live.length > 0;
  const badge = $("activity-count");
  badge.hidden = live.length === 0;
  badge.textContent = String(live.length);
  $("conflicts").replaceChildren(...model.conflicts.map((c) => el("li", {},
    el("span", { class: "grow" }, `${c.path} ⇄ ${c.copy}`),
    el("button", { onclick: () => { api.openPath(c.path); api.openPath(c.copy); } }, "Open both"),
  )));
  $("conflicts-empty").hidden = model.conflicts.length > 0;
  $("errors").replaceChildren(...model.errors.map((e) => el("li", {},
    el("span", { class: "grow" }, errorText(e.code, `${e.path ? e.path + ": " : ""}${e.message}`)))));
  $("errors-empty").hidden = model.errors.length > 0;
  $("done").replaceChildren(...model.done.slice(0, 20).map((x) => el("li", {},
    el("span", { class: "grow", title: x.path }, `${x.direction === "up" ? "↑" : "↓"} ${shortPath(x.path)}`),
    el("span", { class: "muted" }, formatBytes(x.total)))));
}

async function renderSettings() {
  const s = model.settings;
  if (!s) return;
  $("accounts").replaceChildren(...model.roots.map((r) => el("li", { "data-root": r.local },
    el("span", { class: "grow" }, `${r.local} ← ${r.remote}${needsSignIn(r) ? " (needs sign-in)" : ""}`),
    el("button", { onclick: () => removeRoot(r.local) }, "Remove…"),
  )));
  $("budgets").replaceChildren(...model.roots.map((r) => el("label", {}, `${r.local}: keep at most `,
    el("input", {
      "data-budget": r.local,
      placeholder: "no limit",
      value: r.budget?.max_bytes ? sizeText(r.budget.max_bytes) : r.budget?.keep_free_percent ? `${r.budget.keep_free_percent}%` : "",
    }))));
  $("set-download").value = s.download_limit ? sizeText(s.download_limit) : "";
  $("set-upload").value = s.upload_limit ? sizeText(s.upload_limit) : "";
  $("set-poll").value = s.poll_interval_secs;
  $("never").replaceChildren(...s.never_download.map((p) => el("li", {},
    el("span", { class: "grow" }, p),
    el("button", { onclick: () => setNever(s.never_download.filter((x) => x !== p)) }, "Remove"))));
  $("set-autostart").checked = await api.autostartEnabled();
}

// ------------------------------------------------------------------ actions

function select(path, on) {
  if (on) model.selected.add(path);
  else model.selected.delete(path);
  renderFiles();
}

async function openDir(path) {
  model.dir = path;
  model.selected.clear();
  try {
    model.entries = await api.list(path);
    $("files-message").textContent = "";
  } catch (e) {
    // The folder went away (deleted, renamed): back to the top of its sync folder.
    if ((e.code === "not_found" || e.code === "not_a_root") && model.root && path !== model.root)
      return openDir(model.root);
    model.entries = [];
    $("files-message").textContent = problem(e);
  }
  renderCrumbs();
  renderFiles();
}

async function act(action) {
  const paths = [...model.selected];
  if (!paths.length) return;
  const msg = $("files-message");
  let said;
  try {
    if (action === "open") return await api.openPath(paths[0]);
    if (action === "reveal") return await api.reveal(paths[0]);
    msg.textContent = "Working…";
    const r = await api.act(action, paths);
    const skipped = r.skipped?.length ? ` ${r.skipped.length} skipped: ${r.skipped[0].reason}` : "";
    said = `${r.files} file(s), ${formatBytes(r.bytes)}.${skipped}`;
  } catch (e) {
    said = problem(e);
  }
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
  if (!confirm(`Stop syncing ${local}? Files that are on this device stay; online-only files go.`)) return;
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

async function refreshRoots() {
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
  renderSummary();
  await renderSettings();
  if (model.root) await openDir(model.dir);
  else {
    model.entries = [];
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
    m.textContent = "Saved.";
  } catch (e) {
    m.textContent = problem(e);
  }
  await refreshSettings();
}

// ------------------------------------------------------------------ wizard

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
  $("w-next").textContent = name === "folder" ? "Set up" : name === "done" ? "Done" : "Next";
  $("w-error").textContent = "";
  if (name === "webdav") updateResolved();
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
    if ($("w-test-result").dataset.ok !== "true") return (err.textContent = "Test the connection first.");
  }
  if (name === "folder") {
    const folder = $("w-folder").value.trim();
    const bad = checkFolder(folder, model.home);
    if (bad) return (err.textContent = bad);
    $("w-next").disabled = true;
    try {
      const r = await api.addAccount(wizardForm(), folder);
      $("w-done").textContent = `Done: ${r.files} files and ${r.dirs} folders are in ${folder}, online-only. They download when you open them.`;
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
  out.textContent = "Testing…";
  try {
    out.textContent = await api.testConnection(f);
    out.dataset.ok = "true";
  } catch (e) {
    out.textContent = problem(e);
  }
}

function openWizard() {
  const w = $("wizard");
  if (w.open) return;
  wiz.at = 0;
  $("w-folder").value = `${model.home}/Cloud`;
  $("w-test-result").textContent = "";
  $("w-test-result").dataset.ok = "false";
  showStep();
  w.showModal();
}

// ------------------------------------------------------------------ daemon events

/** What each daemon event does to the window (api.js decodes them). */
const daemonEvents = {
  state(ev) {
    model.entries = applyState(model.entries, ev);
    renderFiles();
    // A download ends when its file is complete.
    const t = model.transfers[ev.path];
    if (t && (ev.state === "local" || ev.state === "pinned")) {
      model.done.unshift({ ...t, done: t.total, finished: true });
      delete model.transfers[ev.path];
      renderActivity();
      renderSummary();
    }
  },
  progress(ev) {
    model.transfers = applyProgress(model.transfers, ev, Date.now());
    const t = model.transfers[ev.path];
    if (t.finished) {
      model.done.unshift(t);
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
    refreshRoots();
  },
  root(ev) {
    // A pass starting or ending changes only the root's state: the summary shows it; the
    // folder listing (and any row being clicked) stays as it is.
    if (ev.change === "state") refreshRootStates();
    else refreshRoots();
  },
  lagged() {
    if (model.dir) openDir(model.dir);
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

// ------------------------------------------------------------------ wiring

function showView(name) {
  for (const t of document.querySelectorAll("nav [role=tab]")) {
    const on = t.dataset.view === name;
    t.setAttribute("aria-selected", on ? "true" : "false");
    t.tabIndex = on ? 0 : -1;
    $(`view-${t.dataset.view}`).hidden = !on;
  }
}

function keyboard(ev) {
  const rows = [...document.querySelectorAll("#file-rows tr")];
  const i = rows.indexOf(document.activeElement.closest("tr"));
  if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
    const n = rows[Math.max(0, Math.min(rows.length - 1, i + (ev.key === "ArrowDown" ? 1 : -1)))];
    n?.focus();
    ev.preventDefault();
  } else if (ev.key === " " && i >= 0 && document.activeElement.tagName === "TR") {
    const p = rows[i].dataset.path;
    select(p, !model.selected.has(p));
    rows[i] = document.querySelector(`#file-rows tr[data-path="${CSS.escape(p)}"]`);
    rows[i]?.focus();
    ev.preventDefault();
  } else if (ev.key === "Enter" && i >= 0 && document.activeElement.tagName === "TR") {
    const e = model.entries.find((x) => x.path === rows[i].dataset.path);
    if (e?.kind === "dir") openDir(e.path);
    else if (e) api.openPath(e.path);
  }
}

async function main() {
  for (const t of document.querySelectorAll("nav [role=tab]")) t.addEventListener("click", () => showView(t.dataset.view));
  for (const b of document.querySelectorAll(".toolbar [data-action]")) b.addEventListener("click", () => act(b.dataset.action));
  $("root-select").addEventListener("change", (e) => { model.root = e.target.value; openDir(model.root); });
  $("select-all").addEventListener("change", (e) => {
    model.selected = new Set(e.target.checked ? model.entries.map((x) => x.path) : []);
    renderFiles();
  });
  $("files").addEventListener("keydown", keyboard);
  $("add-account").addEventListener("click", openWizard);
  $("save-settings").addEventListener("click", saveSettings);
  $("never-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const v = $("never-add").value.trim();
    if (v) setNever([...model.settings.never_download, v]);
    $("never-add").value = "";
  });
  $("w-next").addEventListener("click", wizardNext);
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
}

main();
