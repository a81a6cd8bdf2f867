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
import { statSync, readFileSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";

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

async function shot(name) {
  await b.saveScreenshot(`${out}/${name}.png`);
  log(`screenshot ${name}.png`);
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

try {
  const root1 = env("E2E_ROOT1");
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
  const bytes = await reading;
  if (createHash("sha256").update(bytes).digest("hex") !== expected["big.bin"]) throw new Error("big.bin: wrong bytes");
  await until("the transfer listed as done", async () => (await text("#done")).includes("big.bin"), 30);
  await shot("activity-done");
  log("activity: progress shown while big.bin downloaded");

  // A second account, on S3.
  await click("#tab-settings");
  await shot("settings");
  await click("#add-account");
  await wizard({
    kind: "s3",
    folder: env("E2E_ROOT2"),
    fill: async () => {
      await type("#s-endpoint", env("E2E_S3_ENDPOINT"));
      await type("#s-region", "us-east-1");
      await type("#s-bucket", env("E2E_S3_BUCKET"));
      await type("#s-prefix", env("E2E_S3_PREFIX"));
      await type("#s-key", env("E2E_S3_KEY"));
      await type("#s-secret", env("E2E_S3_SECRET"));
    },
  });
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
  writeFileSync(`${out}/steps.txt`, steps.join("\n") + "\n");
} catch (e) {
  try {
    await shot("failure");
  } catch {}
  console.error(`e2e failed after: ${steps.join(" | ")}`);
  throw e;
} finally {
  await b.deleteSession();
}
