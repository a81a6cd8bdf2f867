// Drives the real Skyfill tray app (through tauri-driver and WebKitWebDriver) against a real
// daemon and real servers: the first-run wizard for WebDAV, the files listed online-only,
// "Make available offline" on a folder (bytes checked on disk), "Free up space", a transfer
// shown in Activity, a second account on S3, and the settings. Screenshots of each view go to
// E2E_OUT. Run by tests/e2e/tray.sh inside a private D-Bus session, as root or as a
// throwaway user (tests/tray_e2e.rs runs both); E2E_FOREIGN_ROOTS names sync roots of other
// users that the app must never show. Rows are replaced on daemon events, and the Files list is
// virtualized (only the rows in view are in the page, `#file-rows tr[data-path]`), so no
// element reference is ever held across WebDriver calls: clicks and reads resolve the selector
// inside the page at the moment they act, and nothing is retried. A row is brought into the
// page by `showRow` before it is clicked.
import { remote } from "webdriverio";
import { createHash } from "node:crypto";
import { statSync, readFileSync, writeFileSync, readdirSync, existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { spawn, spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { dirname } from "node:path";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set (tests/tray_e2e.rs sets it)`);
  return v;
};
const out = env("E2E_OUT");
const expected = JSON.parse(readFileSync(env("E2E_EXPECTED"), "utf8")); // rel path -> sha256
const steps = [];

function log(s) {
  steps.push(s);
  console.log(`e2e: ${s}`);
}

async function until(what, f, secs = 60) {
  const end = Date.now() + secs * 1000;
  let last;
  while (Date.now() < end) {
    try {
      if (await f()) return;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ""}`);
}

const sha = (p) => createHash("sha256").update(readFileSync(p)).digest("hex");
const allocated = (p) => statSync(p).blocks * 512;

const b = await remote({
  hostname: "127.0.0.1",
  port: Number(env("E2E_DRIVER_PORT")),
  logLevel: "warn",
  capabilities: { "tauri:options": { application: env("SKYFILL_TRAY_APP") } },
});

// Screenshots are read from the X screen (tests/e2e/screen.py), not asked of WebDriver:
// WebKitWebDriver's screenshot never answers while WebKit's accelerated compositing is off,
// and the app turns it off (src-tauri/src/main.rs). Two animation frames and a short pause
// first, so the last change is on the screen.
async function shot(name) {
  const r = await b.getWindowRect();
  // With no window manager the panel (raised for the tray's checks) may lie over the window:
  // raise the window first, so the frames waited for below also repaint what the panel hid.
  const found = spawnSync("xdotool", ["search", "--onlyvisible", "--name", "^Skyfill$"], { encoding: "utf8" });
  for (const id of (found.stdout || "").trim().split("\n")) {
    if (id) spawnSync("xdotool", ["windowraise", id]);
  }
  await b.executeAsync((done) => requestAnimationFrame(() => requestAnimationFrame(() => done())));
  await new Promise((r) => setTimeout(r, 200));
  screen("window", name, [r.x, r.y, r.width, r.height]);
  log(`screenshot ${name}.png (${r.width}x${r.height} at ${r.x},${r.y})`);
}
const $ = (sel) => b.$(sel);
// Clicks SEL as a user's click reaches it, resolved and clicked within one task of the page
// (a re-render cannot slip between finding and clicking): it waits until the element is in
// the page, displayed, enabled and the topmost element at its centre, then clicks it once.
async function click(sel) {
  let why = "";
  const clicked = until(`${sel} to be clickable`, async () => {
    why = await b.execute((s) => {
      const e = document.querySelector(s);
      if (!e) return "not in the page";
      if (e.disabled) return "disabled";
      e.scrollIntoView({ block: "center", inline: "center" });
      const r = e.getBoundingClientRect();
      if (r.width === 0 || r.height === 0) return "not displayed";
      const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
      if (!hit || !(hit === e || e.contains(hit))) return `covered by ${hit ? hit.outerHTML.slice(0, 80) : "nothing"}`;
      e.click();
      return "";
    }, sel);
    return why === "";
  }, 20);
  await clicked.catch((e) => {
    throw new Error(`${e.message} (${why})`);
  });
}
// Selects VALUE in the <select> SEL the same way (the list is rebuilt when roots change).
async function choose(sel, value) {
  await until(`${value} to be chosen in ${sel}`, async () =>
    b.execute((s, v) => {
      const e = document.querySelector(s);
      if (!e || e.disabled || ![...e.options].some((o) => o.value === v)) return false;
      e.value = v;
      e.dispatchEvent(new Event("change", { bubbles: true }));
      return true;
    }, sel, value), 20);
}
async function type(sel, text) {
  const e = await $(sel);
  await e.waitForDisplayed({ timeout: 20000 });
  await e.clearValue();
  await e.setValue(text);
}
async function text(sel) {
  // textContent: WebKitWebDriver's getText() misses text in some elements.
  return b.execute((s) => document.querySelector(s)?.textContent ?? "", sel);
}

async function wizard({ kind, fill, folder }) {
  await until("the wizard", async () => (await $("#wizard")).isDisplayed());
  if (kind === "s3") await click("input[name=kind][value=s3]");
  await shot(`wizard-1-kind-${kind}`);
  await click("#w-next");
  await fill();
  await shot(`wizard-2-server-${kind}`);
  await click("#w-next");
  await click("#w-test");
  await until("a successful connection test", async () => (await text("#w-test-result")).startsWith("Connected"), 60);
  await shot(`wizard-3-test-${kind}`);
  await click("#w-next");
  await type("#w-folder", folder);
  await click("#w-next");
  await until("the account to be set up", async () => (await text("#w-done")).startsWith("Done"), 120);
  await shot(`wizard-4-done-${kind}`);
  await click("#w-next");
  await until("the wizard to close", async () => !(await (await $("#wizard")).isDisplayed()));
}

// Scrolls the Files list (#files-scroll) from its top, a screen at a time, until the row of
// PATH is in the page: only the rows in view are (their pages are fetched as they come in).
async function showRow(path) {
  await until(`the row of ${path} in the list`, async () => b.execute(async (p) => {
    const row = () => document.querySelector(`#file-rows tr[data-path="${CSS.escape(p)}"]`);
    if (row()) return true;
    const sc = document.getElementById("files-scroll");
    const settled = async () => {
      await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      for (let w = 0; w < 100 && document.querySelector("#file-rows tr.loading"); w++)
        await new Promise((r) => setTimeout(r, 50));
    };
    sc.scrollTop = 0;
    for (;;) {
      await settled();
      if (row()) return true;
      if (sc.scrollTop + sc.clientHeight >= sc.scrollHeight - 1) return false;
      sc.scrollTop += Math.max(1, sc.clientHeight - 50);
    }
  }, path), 60);
}

async function rowState(path) {
  return b.execute(
    (p) => document.querySelector(`#file-rows tr[data-path="${CSS.escape(p)}"]`)?.dataset.state ?? null,
    path,
  );
}
const exists = (sel) => b.execute((s) => document.querySelector(s) !== null, sel);

// ------------------------------------------------------------------ the tray under a real panel
// tests/e2e/tray.sh runs xfce4-panel (a StatusNotifierItem host) at the top of the screen;
// tests/e2e/screen.py reads Xvfb's screen file: the tray icon's pixels, the open menu's
// items. Without a window manager the app's window may cover the panel: it is raised first.
const screenPy = new URL("../../tests/e2e/screen.py", import.meta.url).pathname;
function run(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: exit ${r.status}: ${r.stderr}`);
  return r.stdout;
}
function screen(what, name, box = []) {
  return JSON.parse(run("python3", [screenPy, what, `${out}/${name}.png`, ...box.map(String)]));
}
function raisePanel() {
  for (const id of run("xdotool", ["search", "--class", "xfce4-panel"]).trim().split("\n")) {
    spawnSync("xdotool", ["windowraise", id]);
  }
}
function registered() {
  return run("dbus-send", ["--session", "--print-reply", "--dest=org.kde.StatusNotifierWatcher", "/StatusNotifierWatcher",
    "org.freedesktop.DBus.Properties.Get", "string:org.kde.StatusNotifierWatcher", "string:RegisteredStatusNotifierItems"]);
}
// Waits until the window's summary says STATE (its `data-state`: the same overall state the
// tray shows, from the same events) and the tray icon in the panel is not one of NOT and has
// looked the same for a second under that state; saves the panel as tray-NAME.png. Returns the
// icon's box and pixel digest.
async function trayIcon(name, state, not = []) {
  let last = null, icon = null;
  const inState = async () => (await b.execute(() => document.getElementById("summary")?.dataset.state)) === state;
  await until(`the tray icon showing ${name} (${state})`, async () => {
    if (!(await inState())) {
      last = null;
      return false;
    }
    raisePanel();
    await new Promise((r) => setTimeout(r, 500));
    icon = screen("panel", `tray-${name}`);
    if (!(await inState())) {
      last = null;
      return false;
    }
    const steady = icon && last && icon.digest === last.digest && !not.includes(icon.digest);
    last = icon;
    return steady;
  }, 60);
  log(`screenshot tray-${name}.png: the tray icon (${icon.digest}) in xfce4-panel`);
  return icon;
}
// The visible X windows with their geometry (xdotool), by id.
function windows() {
  const ids = spawnSync("xdotool", ["search", "--onlyvisible", "--name", ""], { encoding: "utf8" }).stdout.trim().split("\n").filter(Boolean);
  const all = new Map();
  for (const id of ids) {
    const g = Object.fromEntries(run("xdotool", ["getwindowgeometry", "--shell", id]).trim().split("\n").map((l) => l.split("=")));
    all.set(id, [Number(g.X), Number(g.Y), Number(g.WIDTH), Number(g.HEIGHT)]);
  }
  return all;
}
// Opens the tray menu with a click on the icon: the menu is the window that appears, below
// the panel. Saves it as tray-menu-NAME.png; returns its items' positions (rows of text, in
// order).
async function trayMenu(name, icon) {
  let m = null;
  await until(`the tray menu (${name})`, async () => {
    raisePanel();
    const before = windows();
    run("xdotool", ["mousemove", String(icon.box[0] + icon.box[2] / 2), String(icon.box[1] + icon.box[3] / 2), "click", "1"]);
    await new Promise((r) => setTimeout(r, 1000));
    const box = [...windows()].find(([id, g]) => !before.has(id) && g[2] > 50 && g[3] > 50 && g[1] >= 20)?.[1];
    if (box) m = screen("menu", `tray-menu-${name}`, box);
    if (m && m.items.length >= 6) return true;
    spawnSync("xdotool", ["key", "Escape"]);
    return false;
  }, 30);
  log(`screenshot tray-menu-${name}.png: the tray menu open, ${m.items.length} items`);
  return m;
}
function trayChoose(m, i) {
  run("xdotool", ["mousemove", String(m.x), String(m.items[i]), "click", "1"]);
}

// ------------------------------------------------------------------ keyboard
// Keys go to whatever has focus, as a person's do (WebDriver key codes).
const K = { Tab: "\uE004", Enter: "\uE007", Space: "\uE00D", Down: "\uE015", Ctrl: "\uE009" };
// Types TEXT into what has focus, a key at a time (in one action, a repeated character such as
// the "ll" of a path is dropped: its second press comes before the first is released).
async function typeKeys(text) {
  for (const ch of text) await b.keys(ch);
}
const focused = () => b.execute(() => {
  const e = document.activeElement;
  return e ? (e.id ? `#${e.id}` : `${e.tagName.toLowerCase()}${e.name ? `[name=${e.name}]` : ""}${e.value ? `[value=${e.value}]` : ""}`) : "";
});
// Presses Tab until SEL has focus (at most MAX presses): SEL is reachable by keyboard.
async function tabTo(sel, max = 80) {
  const seen = [];
  for (let i = 0; i < max; i++) {
    const f = await focused();
    if (f === sel) return;
    seen.push(f);
    await b.keys(K.Tab);
  }
  throw new Error(`${sel} not reached by Tab in ${max} presses (went through ${seen.join(" ")})`);
}
async function expectFocus(sel, what) {
  await until(`${what}: focus on ${sel}`, async () => (await focused()) === sel, 20);
}

// ------------------------------------------------------------------ accessibility audit
// axe-core (from npm) run in the real window: no serious or critical finding allowed, the
// rest logged. Findings go to E2E_OUT/a11y-NAME.json.
const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
async function audit(name) {
  await b.execute(axeSource);
  const r = await b.executeAsync((done) => {
    globalThis.axe
      .run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } })
      .then((r) => done({
        dark: matchMedia("(prefers-color-scheme: dark)").matches,
        passes: r.passes.length,
        violations: r.violations.map((v) => ({
          id: v.id, impact: v.impact, help: v.help,
          nodes: v.nodes.map((n) => `${n.target.join(" ")}: ${n.failureSummary}`),
        })),
      }))
      .catch((e) => done({ error: String(e) }));
  });
  writeFileSync(`${out}/a11y-${name}.json`, JSON.stringify(r, null, 2));
  if (r.error) throw new Error(`accessibility audit of ${name} failed to run: ${r.error}`);
  const theme = process.env.E2E_THEME;
  if (theme && r.dark !== (theme === "dark")) throw new Error(`the window has the ${r.dark ? "dark" : "light"} theme, not ${theme}`);
  const bad = r.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  if (bad.length) {
    throw new Error(`accessibility audit of ${name} (${r.dark ? "dark" : "light"} theme): ` +
      bad.map((v) => `${v.impact} ${v.id} (${v.help}): ${v.nodes.slice(0, 3).join("; ")}`).join(" | "));
  }
  log(`accessibility audit ${name} (${r.dark ? "dark" : "light"} theme): ${r.passes} rules pass, ` +
    `${r.violations.length} minor or moderate findings${r.violations.length ? ` (${r.violations.map((v) => v.id).join(", ")})` : ""}`);
  return r;
}

// ------------------------------------------------------------------ memory
// The app's process and its descendants (WebKit's web and network processes), with their
// proportional set sizes (PSS, KiB).
function processes() {
  const all = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      // This run's user's processes only (another user's run may be on this machine).
      if (statSync(`/proc/${d}`).uid !== process.getuid()) continue;
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      all.push({ pid: Number(d), ppid, comm });
    } catch {}
  }
  return all;
}
// The app's processes: the tray process (skyfill-tray-icon, "skyfill-tray-ic" as the kernel
// names it) and the window's (skyfill-tray), each with its descendants (WebKit's processes).
const appNames = ["skyfill-tray", "skyfill-tray-ic"];
function appTree() {
  const all = processes();
  const tops = all.filter((p) => appNames.includes(p.comm) && !all.some((q) => q.pid === p.ppid && appNames.includes(q.comm)));
  const icons = all.filter((p) => p.comm === "skyfill-tray-ic");
  if (icons.length !== 1) {
    throw new Error(`expected one running tray process (skyfill-tray-icon), found ${icons.length} (app processes: ${tops.map((p) => p.comm).join(", ")})`);
  }
  const tree = [...tops];
  for (let i = 0; i < tree.length; i++) tree.push(...all.filter((p) => p.ppid === tree[i].pid));
  return tree.map((p) => {
    let pss = 0;
    try {
      pss = Number(/^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${p.pid}/smaps_rollup`, "utf8"))[1]);
    } catch {}
    return { ...p, pss };
  });
}
const sumPss = (t) => t.reduce((a, p) => a + p.pss, 0);
const showTree = (t) => t.map((p) => `${p.comm} ${(p.pss / 1024).toFixed(1)} MiB`).join(", ");
const webProcess = (t) => t.some((p) => p.comm.startsWith("WebKitWebProces"));
const readyLines = (f) => (existsSync(f) ? readFileSync(f, "utf8").split("\n").filter((l) => l.includes("window ready")) : []);

let windowClosed = false;
try {
  const root1 = env("E2E_ROOT1");
  // The tray item is hosted by the panel; with no sync folder yet its icon says so.
  await until("the tray item registered with the panel's StatusNotifierWatcher", async () =>
    registered().includes("/StatusNotifierItem"), 30);
  const trayNone = await trayIcon("no-folder", "idle");
  // The daemon has no root: the window opens on the wizard (WebDAV, with a password).
  await wizard({
    kind: "webdav",
    folder: root1,
    fill: async () => {
      await type("#w-url", env("E2E_DAV_URL"));
      await type("#w-user", env("E2E_DAV_USER"));
      await type("#w-pass", env("E2E_DAV_PASS"));
      await until("the folder address", async () => (await text("#w-resolved")).startsWith("dav://"));
    },
  });
  log("WebDAV account added");

  // Files are listed, online-only.
  await until("files listed", async () => (await rowState(`${root1}/big.bin`)) === "online-only");
  if ((await rowState(`${root1}/docs`)) === null) throw new Error("folder docs not listed");
  for (const rel of Object.keys(expected)) {
    if (allocated(`${root1}/${rel}`) > 8192) throw new Error(`${rel} takes disk before any read`);
  }
  await shot("files-online-only");
  // The toolbar (folder, filter, the three actions) takes one line of the 920-pixel window.
  const toolbar = await b.execute(() => {
    const boxes = [...document.querySelectorAll("#view-files .toolbar > *")]
      .map((e) => e.getBoundingClientRect()).filter((r) => r.height > 0);
    let lines = 0;
    let bottom = -Infinity;
    for (const r of boxes) {
      if (r.top >= bottom) lines++;
      bottom = r.top >= bottom ? r.bottom : Math.max(bottom, r.bottom);
    }
    return { items: boxes.length, lines };
  });
  if (toolbar.items < 5 || toolbar.lines !== 1) throw new Error(`the Files toolbar: ${JSON.stringify(toolbar)}`);
  const trayOk = await trayIcon("up-to-date", "ok", [trayNone.digest]);

  // The storage overview says what is on this device and what is online-only.
  await until("the storage overview", async () => (await text("#storage-summary")).includes("on this device"));
  const bar = await b.execute(() => [...document.querySelectorAll("#storage-bar span")].map((e) => e.className));
  if (!bar.includes("local") || !bar.includes("online")) throw new Error(`storage bar parts: ${bar}`);
  log(`storage overview: ${await text("#storage-summary")}`);

  // Sorting: a click on Size lists the largest file first (folders stay first); the
  // daemon sorts the whole folder. A second click reverses.
  const files = () => b.execute(() => [...document.querySelectorAll("#file-rows tr[data-path]")]
    .filter((r) => !r.querySelector("td.name button")).map((r) => r.dataset.path.split("/").pop()));
  const sortedBy = async (col) => b.execute((c) => document.querySelector(`#files th[data-sort=${c}]`).getAttribute("aria-sort"), col);
  await click("#sort-size");
  await until("largest first", async () =>
    (await sortedBy("size")) === "descending" && JSON.stringify(await files()) === JSON.stringify(["big.bin", "photo.jpg", "a-small.txt"]));
  await shot("files-sorted-by-size");
  await click("#sort-size");
  await until("smallest first", async () =>
    (await sortedBy("size")) === "ascending" && (await files())[0] === "a-small.txt");
  await click("#sort-name");
  await until("by name again", async () =>
    (await sortedBy("name")) === "ascending" && JSON.stringify(await files()) === JSON.stringify(["a-small.txt", "big.bin", "photo.jpg"]));
  log("sorting by size and name, both ways");

  // Filter: only the matching rows, then everything again.
  const filter = (v) => b.execute((x) => {
    const f = document.getElementById("filter");
    f.value = x;
    f.dispatchEvent(new Event("input", { bubbles: true }));
  }, v);
  await filter("PHOTO");
  await until("only photo.jpg", async () =>
    JSON.stringify(await b.execute(() => [...document.querySelectorAll("#file-rows tr[data-path]")].map((r) => r.dataset.path.split("/").pop()))) === JSON.stringify(["photo.jpg"]));
  await shot("files-filtered");
  await filter("");
  await until("every row back", async () => (await files()).length === 3 && (await rowState(`${root1}/docs`)) !== null);
  log("filter: one row, then all again");

  // File-type icons: an image and a text file look different.
  const kinds = await b.execute(() => Object.fromEntries([...document.querySelectorAll("#file-rows tr[data-path]")]
    .map((r) => {
      const i = r.querySelector(".ftype");
      return [r.dataset.path.split("/").pop(), i ? i.getAttribute("src") || i.className : ""];
    })));
  if (!kinds["photo.jpg"] || kinds["photo.jpg"] === kinds["a-small.txt"] || kinds["docs"] === kinds["a-small.txt"])
    throw new Error(`type icons: ${JSON.stringify(kinds).slice(0, 400)}`);
  const themed = Object.values(kinds).filter((k) => k.startsWith("data:image/")).length;
  log(`file-type icons: ${themed} of ${Object.keys(kinds).length} from the icon theme`);

  // Right-click on a row: the menu with the file manager's actions; Escape closes it.
  await b.execute((p) => {
    const r = document.querySelector(`#file-rows tr[data-path="${CSS.escape(p)}"] td.date`).getBoundingClientRect();
    document.querySelector(`#file-rows tr[data-path="${CSS.escape(p)}"] td.date`).dispatchEvent(
      new MouseEvent("contextmenu", { bubbles: true, cancelable: true, clientX: r.left + 5, clientY: r.top + 5 }));
  }, `${root1}/photo.jpg`);
  await until("the row menu", async () => b.execute(() => !document.getElementById("row-menu").hidden));
  const items = await b.execute(() => [...document.querySelectorAll("#row-menu [data-action]:not([hidden])")].map((e) => e.textContent));
  if (!items.includes("Open") || !items.includes("Make available offline")) throw new Error(`menu items: ${items}`);
  if ((await b.execute(() => document.activeElement?.textContent)) !== "Open") throw new Error("the menu's first item lacks the focus");
  await shot("files-row-menu");
  await b.keys(["Escape"]);
  await until("the menu closed", async () => b.execute(() => document.getElementById("row-menu").hidden));
  log(`right-click menu: ${items.join(", ")}`);
  // The selection the right-click made is let go before the folder actions below.
  await b.execute(() => document.getElementById("select-all").click());
  await b.execute(() => document.getElementById("select-all").click());

  // Make available offline on the folder: its files become local with the right bytes.
  await showRow(`${root1}/docs`);
  await click(`#file-rows tr[data-path="${root1}/docs"] input[type=checkbox]`);
  await until("docs selected", async () =>
    (await text(`#file-rows tr[data-path="${root1}/docs"][aria-selected=true] td.name`)) === "docs/");
  await click("#act-offline");
  const docs = Object.keys(expected).filter((k) => k.startsWith("docs/"));
  await until("docs/ to be local on disk", async () =>
    docs.every((k) => allocated(`${root1}/${k}`) >= statSync(`${root1}/${k}`).size), 120);
  for (const k of docs) {
    if (sha(`${root1}/${k}`) !== expected[k]) throw new Error(`${k}: wrong bytes after offline`);
  }
  await showRow(`${root1}/docs`);
  await click(`#file-rows tr[data-path="${root1}/docs"] button`); // open the folder
  await until("pinned states shown", async () => (await rowState(`${root1}/${docs[0]}`)) === "pinned");
  await shot("files-offline");
  log(`make available offline: ${docs.length} files local, bytes verified`);

  // Free up space: back to online-only, no disk used.
  await click("#select-all");
  await click("#act-free");
  await until("docs/ freed on disk", async () => docs.every((k) => allocated(`${root1}/${k}`) <= 8192), 60);
  await until("online-only states shown", async () => (await rowState(`${root1}/${docs[0]}`)) === "online-only");
  await shot("files-freed");
  log("free up space: files online-only again");

  // A download in progress shows in Activity (the daemon has a download limit set).
  await click("#tab-activity");
  const reading = readFile(`${root1}/big.bin`);
  await until("a transfer with a progress bar", async () =>
    exists(`#transfers li[data-path="${root1}/big.bin"] progress`), 30);
  await shot("activity-transfer");
  const traySyncing = await trayIcon("syncing", "syncing", [trayNone.digest, trayOk.digest]);
  const bytes = await reading;
  if (createHash("sha256").update(bytes).digest("hex") !== expected["big.bin"]) throw new Error("big.bin: wrong bytes");
  await until("the transfer listed as done", async () => (await text("#done")).includes("big.bin"), 30);
  await shot("activity-done");
  log("activity: progress shown while big.bin downloaded");

  // The tray menu, opened with a click on the icon in the panel: Pause syncing (the third
  // item: open the folder, the state line, pause) shows the paused icon; Resume brings the
  // up-to-date one back.
  await trayIcon("up-to-date-again", "ok", [traySyncing.digest]);
  const menu = await trayMenu("up-to-date", trayOk);
  trayChoose(menu, 2);
  const trayPaused = await trayIcon("paused", "paused", [trayOk.digest, traySyncing.digest, trayNone.digest]);
  const menu2 = await trayMenu("paused", trayPaused);
  trayChoose(menu2, 2);
  const back = await trayIcon("resumed", "ok", [trayPaused.digest]);
  if (back.digest !== trayOk.digest) throw new Error(`after Resume the tray icon is not the up-to-date one (${back.digest}, ${trayOk.digest})`);
  log("tray: no folder, up to date, syncing and paused icons differ; the menu pauses and resumes");

  // A second account, on S3.
  await click("#tab-settings");
  await shot("settings");
  await audit("settings");
  // The second account by keyboard alone, from the Add account button to the wizard's end:
  // Tab to move, arrows for the choice, typing, Enter to go on.
  await tabTo("#add-account");
  await b.keys(K.Enter);
  await until("the wizard", async () => (await $("#wizard")).isDisplayed());
  await expectFocus("input[name=kind][value=webdav]", "the wizard opens on the chosen kind");
  await b.keys(K.Down);
  await until("S3 chosen by the arrow key", async () =>
    b.execute(() => document.querySelector("input[name=kind][value=s3]").checked));
  await shot("wizard-1-kind-s3");
  await audit("wizard");
  await tabTo("#w-next");
  await b.keys(K.Enter);
  await expectFocus("#s-endpoint", "the S3 step starts at its first field");
  for (const [sel, v] of [["#s-endpoint", env("E2E_S3_ENDPOINT")], ["#s-region", "us-east-1"], ["#s-bucket", env("E2E_S3_BUCKET")], ["#s-prefix", env("E2E_S3_PREFIX")]]) {
    await expectFocus(sel, "the next field");
    await typeKeys(v);
    await b.keys(K.Tab);
  }
  await expectFocus("#s-path-style", "the path-style check box"); // left checked
  await b.keys(K.Tab);
  await expectFocus("#s-key", "the access key");
  await typeKeys(env("E2E_S3_KEY"));
  await b.keys(K.Tab);
  await typeKeys(env("E2E_S3_SECRET"));
  const typed = await b.execute(() => ["#s-endpoint", "#s-region", "#s-bucket", "#s-prefix", "#s-key", "#s-secret"].map((s) => document.querySelector(s).value));
  const want = [env("E2E_S3_ENDPOINT"), "us-east-1", env("E2E_S3_BUCKET"), env("E2E_S3_PREFIX"), env("E2E_S3_KEY"), env("E2E_S3_SECRET")];
  if (JSON.stringify(typed) !== JSON.stringify(want)) throw new Error(`the S3 fields hold ${JSON.stringify(typed)} after typing ${JSON.stringify(want)}`);
  await shot("wizard-2-server-s3");
  await b.keys(K.Enter); // Enter in a field goes on
  await expectFocus("#w-test", "the test step");
  await b.keys(K.Enter);
  await until("a successful connection test", async () => (await text("#w-test-result")).startsWith("Connected"), 60);
  await shot("wizard-3-test-s3");
  await expectFocus("#w-next", "Next after a good test");
  await b.keys(K.Enter);
  await expectFocus("#w-folder", "the folder step");
  await b.keys([K.Ctrl, "a"]);
  await typeKeys(env("E2E_ROOT2"));
  await b.keys(K.Enter);
  await until("the account to be set up", async () => (await text("#w-done")).startsWith("Done"), 120);
  await shot("wizard-4-done-s3");
  await expectFocus("#w-next", "Done");
  await b.keys(K.Enter);
  await until("the wizard to close", async () => !(await (await $("#wizard")).isDisplayed()));
  log("S3 account added with the keyboard alone");
  await click("#tab-files");
  await choose("#root-select", env("E2E_ROOT2"));
  await until("S3 files listed", async () => (await rowState(`${env("E2E_ROOT2")}/s3file.txt`)) === "online-only");
  await shot("files-s3");
  log("S3 account added, files listed online-only");

  // Only this user's accounts are shown, never another user's roots.
  const shown = await b.execute(() => [...document.querySelectorAll("#root-select option")].map((o) => o.value));
  const mine = [root1, env("E2E_ROOT2")];
  if (shown.length !== 2 || !mine.every((r) => shown.includes(r))) throw new Error(`accounts shown: ${shown}`);
  for (const r of (process.env.E2E_FOREIGN_ROOTS || "").split(",").filter(Boolean)) {
    if ((await text("#accounts")).includes(r)) throw new Error(`another user's root ${r} is shown`);
  }
  log(`accounts shown: ${shown.join(", ")}`);

  // The daemon's worker dies (tests/tray_e2e.rs kills it when asked, as root): the new one
  // has no secret (it is only in the keyring), and the app hands it over again as soon as it
  // reconnects; reads work again without the user.
  writeFileSync(`${out}/kill-worker`, "");
  await until("the test to kill the worker", async () => {
    try {
      return readFileSync(`${out}/worker-killed`, "utf8").trim() !== "";
    } catch {
      return false;
    }
  }, 60);
  log(`worker ${readFileSync(`${out}/worker-killed`, "utf8").trim()} killed`);
  await until("the S3 folder readable again after the daemon restarted", async () => {
    try {
      return (await readFile(`${env("E2E_ROOT2")}/s3file.txt`, "utf8")) === "on s3\n";
    } catch {
      return false;
    }
  }, 90);
  log("after a daemon restart the app re-sent the secret from the keyring");

  // Every view audited for accessibility in the theme this run has.
  for (const v of ["files", "activity"]) {
    await click(`#tab-${v}`);
    await audit(v);
  }

  // A light tray: idle with the window open, then Ctrl+W closes it; the window's process
  // ends with its WebKit processes and the tray process lives on alone. Starting the tray
  // program again opens the window. Memory (PSS of the app's processes and children) and
  // the time to reopen go to E2E_OUT/tray-memory.json; doc/BENCHMARKS.md has the release
  // build's figures.
  const trayLog = env("SKYFILL_TRAY_LOG");
  await new Promise((r) => setTimeout(r, 3000));
  const open = appTree();
  if (!webProcess(open)) throw new Error(`no WebKit web process under the app with its window open: ${showTree(open)}`);
  log(`window open: ${(sumPss(open) / 1024).toFixed(1)} MiB PSS (${showTree(open)})`);
  await click("#tab-files");
  windowClosed = true;
  // (The window's process ends while the keys are still held: WebDriver then reports no
  // such window, or that the session is gone.)
  await b.keys([K.Ctrl, "w"]).catch((e) => {
    if (!/no such window|invalid session id|session deleted|unknown error/i.test(String(e))) throw e;
  });
  let closed;
  // The window's process ends with its WebKit processes; the tray process stays.
  await until("the window process to exit after Ctrl+W", async () =>
    (closed = appTree()).every((p) => p.comm === "skyfill-tray-ic"), 30);
  await new Promise((r) => setTimeout(r, 3000));
  closed = appTree();
  log(`window closed, the app in the tray: ${(sumPss(closed) / 1024).toFixed(1)} MiB PSS (${showTree(closed)})`);
  if (sumPss(closed) >= sumPss(open)) throw new Error("closing the window freed no memory");
  const before = readyLines(trayLog).length;
  const t0 = Date.now();
  // Starting the tray program again asks the running tray to open the window (over D-Bus).
  const again = spawn(`${dirname(env("SKYFILL_TRAY_APP"))}/skyfill-tray-icon`, [], { stdio: "ignore" });
  const second = await new Promise((r) => again.on("exit", (code) => r(code)));
  await until("the window to open again when the app is started a second time", async () => readyLines(trayLog).length > before, 60);
  const took = Date.now() - t0;
  const line = readyLines(trayLog).at(-1);
  const inApp = Number(/ms=(\d+)/.exec(line)?.[1]);
  await new Promise((r) => setTimeout(r, 3000));
  const reopened = appTree();
  if (!webProcess(reopened)) throw new Error(`the reopened window has no web process: ${showTree(reopened)}`);
  log(`second start (exit ${second}) reopened the window: page ready ${inApp} ms after the request, ${took} ms after the launch; open again: ${(sumPss(reopened) / 1024).toFixed(1)} MiB PSS`);
  writeFileSync(`${out}/tray-memory.json`, JSON.stringify({
    open_kib: sumPss(open), closed_kib: sumPss(closed), reopened_kib: sumPss(reopened),
    reopen_ms: inApp, reopen_from_launch_ms: took,
    open, closed, reopened,
  }, null, 2));
  // The desktop's language: a window started in a German session speaks German (the page
  // reports its language and the Files tab's words when it is drawn). The reopened window's
  // process is ended first (one window a session).
  for (const p of appTree().filter((p) => p.comm === "skyfill-tray")) process.kill(p.pid, "SIGTERM");
  await until("the reopened window to close", async () => appTree().every((p) => p.comm === "skyfill-tray-ic"), 30);
  const beforeDe = readyLines(trayLog).length;
  const german = spawn(env("SKYFILL_TRAY_APP"), ["--window"], {
    stdio: "ignore",
    env: { ...process.env, LANG: "de_DE.UTF-8", LANGUAGE: "de", LC_ALL: "", LC_MESSAGES: "" },
  });
  try {
    await until("a window in German", async () => readyLines(trayLog).length > beforeDe, 60);
    const ready = readyLines(trayLog).at(-1);
    if (!/lang="?de"?\b/.test(ready) || !/tab="?Dateien"?/.test(ready)) throw new Error(`the German window does not speak German: ${ready}`);
    // German words are longer: the Files toolbar still takes one line.
    if (!/toolbar_lines=1\b/.test(ready)) throw new Error(`the German Files toolbar is not on one line: ${ready}`);
    await new Promise((r) => setTimeout(r, 1500));
    screen("png", "window-german");
    log("screenshot window-german.png: the window in a German session (lang=de, Files tab \"Dateien\", the toolbar on one line)");
  } finally {
    german.kill("SIGTERM");
  }
  writeFileSync(`${out}/steps.txt`, steps.join("\n") + "\n");
} catch (e) {
  try {
    await shot("failure");
  } catch {}
  console.error(`e2e failed after: ${steps.join(" | ")}`);
  throw e;
} finally {
  // (After Ctrl+W the session's window is gone: ending it may fail.)
  await b.deleteSession().catch((e) => {
    if (!windowClosed) throw e;
  });
}
