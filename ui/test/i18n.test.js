// Translations (public/src/i18n.js): lookup and fallback, placeholders, plural formulas, the
// page's static markup (in happy-dom), and the real German catalogue (po/de.po, read here with
// a small PO reader) rendering real UI strings; every message the JS modules and index.html
// use must be translated in it.
import { afterEach, describe as d, expect, test } from "vitest";
import { readFileSync, readdirSync } from "node:fs";
import { Window } from "happy-dom";
import {
  ENGLISH,
  compilePlural,
  formatList,
  formatNumber,
  lang,
  locale,
  setCatalogue,
  t,
  tn,
  tParts,
  translatePage,
} from "../public/src/i18n.js";
import { describe, formatBytes, formatDate, formatEta, overall, storage, transferText } from "../public/src/logic.js";

afterEach(() => setCatalogue(ENGLISH));

/** A PO file's messages as the `catalogue` command gives them (obsolete, fuzzy and empty entries left out). */
function readPo(text) {
  const unquote = (s) =>
    JSON.parse(s.replace(/\\(.)/g, (m, c) => (c === "n" ? "\\n" : c === "t" ? "\\t" : c === "r" ? "\\r" : m)));
  const entries = [];
  let cur = null;
  let field = null;
  const finish = () => {
    if (cur && cur.id !== undefined) entries.push(cur);
    cur = null;
    field = null;
  };
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#~")) {
      if (!line) finish();
      continue;
    }
    if (line.startsWith("#")) {
      if (cur?.strs.length) finish();
      cur ??= { strs: [], fuzzy: false };
      if (line.startsWith("#,")) cur.fuzzy ||= line.slice(2).split(",").some((f) => f.trim() === "fuzzy");
      continue;
    }
    if (line.startsWith('"')) {
      field.set(field.get() + unquote(line));
      continue;
    }
    const m = /^(msgctxt|msgid|msgid_plural|msgstr(?:\[(\d+)\])?)\s+(".*")$/.exec(line);
    if (!m) throw new Error(`unreadable line in a PO file: ${line}`);
    if ((m[1] === "msgid" || m[1] === "msgctxt") && cur?.strs.length) finish();
    cur ??= { strs: [], fuzzy: false };
    const e = cur;
    const v = unquote(m[3]);
    if (m[1].startsWith("msgstr")) {
      const i = Number(m[2] ?? 0);
      e.strs[i] = v;
      field = { get: () => e.strs[i], set: (x) => (e.strs[i] = x) };
    } else {
      const k = { msgctxt: "ctxt", msgid: "id", msgid_plural: "plural" }[m[1]];
      e[k] = v;
      field = { get: () => e[k], set: (x) => (e[k] = x) };
    }
  }
  finish();
  const header = entries.find((e) => e.id === "")?.strs[0] ?? "";
  const plural = /Plural-Forms:.*plural=([^;\n]*)/.exec(header)?.[1].trim();
  const messages = {};
  for (const e of entries) {
    if (e.id === "" || e.fuzzy || e.ctxt !== undefined || e.strs.some((s) => !s)) continue;
    messages[e.id] = e.strs;
  }
  return { header, plural, entries, messages };
}

const root = new URL("../../", import.meta.url);
const de = readPo(readFileSync(new URL("po/de.po", root), "utf8"));
const german = () => setCatalogue({ lang: "de", plural: de.plural, messages: de.messages });

d("lookup", () => {
  test("English: each id is its own text, placeholders filled by name", () => {
    expect(lang()).toBe("en");
    expect(t("Open")).toBe("Open");
    expect(t("Select {name}", { name: "a.txt" })).toBe("Select a.txt");
    // A placeholder without a value stays as it is; other braces too.
    expect(t("{a} and {b} {not a placeholder}", { a: 1 })).toBe("1 and {b} {not a placeholder}");
    expect(t("{n}", { n: 0 })).toBe("0");
    expect(tn("{n} file", "{n} files", 1)).toBe("1 file");
    expect(tn("{n} file", "{n} files", 0)).toBe("0 files");
    expect(tn("{n} file", "{n} files", 2)).toBe("2 files");
    expect(tn("{n} file in {dir}", "{n} files in {dir}", 1234, { dir: "Cloud" })).toBe("1,234 files in Cloud");
  });

  test("a catalogue's messages, falling back to the English where one is missing or empty", () => {
    setCatalogue({
      lang: "de",
      plural: "n != 1",
      messages: {
        Open: ["Öffnen"],
        "Select {name}": ["{name} auswählen"],
        "{n} file": ["{n} Datei", "{n} Dateien"],
        Empty: [""],
        "{n} half": ["{n} halb"],
      },
    });
    expect(lang()).toBe("de");
    expect(locale()).toBe("de");
    expect(t("Open")).toBe("Öffnen");
    expect(t("Select {name}", { name: "a.txt" })).toBe("a.txt auswählen");
    expect(t("Not translated")).toBe("Not translated");
    expect(t("Empty")).toBe("Empty");
    expect(t("constructor")).toBe("constructor"); // no prototype keys
    expect(tn("{n} file", "{n} files", 1)).toBe("1 Datei");
    expect(tn("{n} file", "{n} files", 2)).toBe("2 Dateien");
    expect(tn("{n} file", "{n} files", 1234)).toBe("1.234 Dateien"); // the locale's digits
    // A form the catalogue lacks: the English one.
    expect(tn("{n} half", "{n} halves", 2)).toBe("2 halves");
    expect(tn("{n} other", "{n} others", 1)).toBe("1 other");
    // A sentence with an element in it: the element where the language puts it.
    const input = { element: true };
    expect(tParts("{name}: keep at most {input}", { name: "Cloud", input })).toEqual(["Cloud: keep at most ", input]);
    expect(formatNumber(1.5, { minimumFractionDigits: 1 })).toBe("1,5");
    expect(formatList(["a", "b", "c"])).toBe("a, b und c");
  });

  test("locales for Intl from the catalogue's language", () => {
    for (const [l, want] of [["pt_BR", "pt-BR"], ["sr@latin", "sr"], ["de_DE.UTF-8", "de-DE"], ["", "en"], ["!!", "en"]]) {
      setCatalogue({ lang: l, plural: "n != 1", messages: {} });
      expect(locale(), l).toBe(want);
    }
    setCatalogue(null);
    expect(lang()).toBe("en");
  });
});

d("plural formulas", () => {
  const forms = (formula, ns) => ns.map(compilePlural(formula));
  test("the common ones, for n = 0, 1, 2 and more", () => {
    expect(forms("n != 1", [0, 1, 2, 5])).toEqual([1, 0, 1, 1]); // English, German
    expect(forms("(n != 1)", [0, 1, 2])).toEqual([1, 0, 1]);
    expect(forms("n > 1", [0, 1, 2])).toEqual([0, 0, 1]); // French
    expect(forms("0", [0, 1, 2])).toEqual([0, 0, 0]); // Japanese, Chinese
    expect(forms("nplurals=2; plural=(n != 1);", [0, 1, 2])).toEqual([1, 0, 1]); // a whole header
    const slavic = "(n%10==1 && n%100!=11 ? 0 : n%10>=2 && n%10<=4 && (n%100<10 || n%100>=20) ? 1 : 2)";
    expect(forms(slavic, [0, 1, 2, 5, 11, 21, 22, 25, 111, 112])).toEqual([2, 0, 1, 2, 2, 0, 1, 2, 2, 2]); // Russian
    const polish = "(n==1 ? 0 : n%10>=2 && n%10<=4 && (n%100<10 || n%100>=20) ? 1 : 2)";
    expect(forms(polish, [0, 1, 2, 5, 21, 22])).toEqual([2, 0, 1, 2, 2, 1]);
    expect(forms("(n==1) ? 0 : (n>=2 && n<=4) ? 1 : 2", [0, 1, 2, 4, 5])).toEqual([2, 0, 1, 1, 2]); // Czech
    const arabic = "n==0 ? 0 : n==1 ? 1 : n==2 ? 2 : n%100>=3 && n%100<=10 ? 3 : n%100>=11 ? 4 : 5";
    expect(forms(arabic, [0, 1, 2, 3, 11, 100, 102])).toEqual([0, 1, 2, 3, 4, 5, 5]);
    expect(forms("n%100==1 ? 0 : n%100==2 ? 1 : n%100==3 || n%100==4 ? 2 : 3", [1, 2, 3, 5, 101])).toEqual([0, 1, 2, 3, 0]); // Slovenian
    expect(forms("!(n == 1)", [0, 1])).toEqual([1, 0]);
    expect(forms("n / 2 - 1 + 1 * 1", [5])).toEqual([2]); // integer division
  });
  test("anything else is refused, never run", () => {
    for (const bad of ["", "n !=", "alert(1)", "n; process.exit(1)", "constructor", "n ? 1", "(n", "n)", "1 2", "n = 1", "n != 1 && globalThis", "0x10", "'a'"])
      expect(compilePlural(bad), bad).toBeNull();
    expect(compilePlural("n / 0")(3)).toBeNaN();
  });
  test("tn follows the catalogue's formula, with English as the fallback", () => {
    const cat = (plural) => ({ lang: "xx", plural, messages: { "{n} file": ["{n} A", "{n} B", "{n} C"] } });
    setCatalogue(cat("n > 1"));
    expect([0, 1, 2].map((n) => tn("{n} file", "{n} files", n))).toEqual(["0 A", "1 A", "2 B"]);
    setCatalogue(cat("0"));
    expect([0, 1, 2].map((n) => tn("{n} file", "{n} files", n))).toEqual(["0 A", "1 A", "2 A"]);
    setCatalogue(cat("n == 1 ? 0 : n == 2 ? 1 : 2"));
    expect([0, 1, 2].map((n) => tn("{n} file", "{n} files", n))).toEqual(["0 C", "1 A", "2 B"]);
    setCatalogue(cat("n + 5")); // a form the catalogue does not have: English
    expect([0, 1].map((n) => tn("{n} file", "{n} files", n))).toEqual(["0 files", "1 file"]);
    setCatalogue(cat("require('fs')")); // unreadable: n != 1
    expect([0, 1, 2].map((n) => tn("{n} file", "{n} files", n))).toEqual(["0 B", "1 A", "2 B"]);
  });
});

d("the page's markup", () => {
  const page = () => {
    const w = new Window();
    w.document.body.innerHTML = `
      <h2 id="h" data-i18n>  Transfers
      </h2>
      <button id="b" title="Turn every file online-only" data-i18n-title data-i18n>Free up space</button>
      <input id="f" placeholder="Filter this folder" aria-label="Filter this folder" data-i18n-placeholder data-i18n-aria-label>
      <nav id="n" aria-label="Views" data-i18n-aria-label="Views"></nav>
      <p id="p" data-i18n="This looks like Nextcloud: {button} to get an app password.">This looks like Nextcloud:
        <button id="flow" data-i18n-slot="button" data-i18n>Log in with the browser</button> to get an app password.</p>
      <p id="other">Not marked</p>`;
    return w.document;
  };
  const cat = {
    lang: "de",
    plural: "n != 1",
    messages: {
      Transfers: ["Übertragungen"],
      "Free up space": ["Speicherplatz freigeben"],
      "Turn every file online-only": ["Alle Dateien nur online"],
      "Filter this folder": ["Diesen Ordner filtern"],
      Views: ["Ansichten"],
      "This looks like Nextcloud: {button} to get an app password.": ["Nextcloud erkannt. {button} für ein App-Passwort."],
      "Log in with the browser": ["Im Browser anmelden"],
    },
  };

  test("English: the same words, whitespace tidied", () => {
    const doc = page();
    translatePage(doc);
    expect(doc.getElementById("h").textContent).toBe("Transfers");
    expect(doc.getElementById("b").textContent).toBe("Free up space");
    expect(doc.getElementById("f").getAttribute("placeholder")).toBe("Filter this folder");
    expect(doc.getElementById("p").textContent).toBe("This looks like Nextcloud: Log in with the browser to get an app password.");
  });

  test("translated: text, attributes, and slots moved where the language puts them", () => {
    const doc = page();
    const flow = doc.getElementById("flow");
    flow.addEventListener("click", () => (flow.dataset.clicked = "yes"));
    setCatalogue(cat);
    translatePage(doc);
    expect(doc.getElementById("h").textContent).toBe("Übertragungen");
    expect(doc.getElementById("b").textContent).toBe("Speicherplatz freigeben");
    expect(doc.getElementById("b").getAttribute("title")).toBe("Alle Dateien nur online");
    expect(doc.getElementById("f").getAttribute("placeholder")).toBe("Diesen Ordner filtern");
    expect(doc.getElementById("f").getAttribute("aria-label")).toBe("Diesen Ordner filtern");
    expect(doc.getElementById("n").getAttribute("aria-label")).toBe("Ansichten");
    const p = doc.getElementById("p");
    expect(p.textContent).toBe("Nextcloud erkannt. Im Browser anmelden für ein App-Passwort.");
    // The slot is the same element (its id and listeners kept), not a copy.
    expect(doc.getElementById("flow")).toBe(flow);
    expect(p.children[0]).toBe(flow);
    flow.click();
    expect(flow.dataset.clicked).toBe("yes");
    expect(doc.getElementById("other").textContent).toBe("Not marked");
    // Again, back in English: the ids were kept.
    setCatalogue(ENGLISH);
    translatePage(doc);
    expect(doc.getElementById("h").textContent).toBe("Transfers");
    expect(doc.getElementById("b").getAttribute("title")).toBe("Turn every file online-only");
    expect(p.textContent).toBe("This looks like Nextcloud: Log in with the browser to get an app password.");
  });

  test("a translation that loses a slot keeps the element in the page", () => {
    const doc = page();
    setCatalogue({ ...cat, messages: { ...cat.messages, "This looks like Nextcloud: {button} to get an app password.": ["Nextcloud!"] } });
    translatePage(doc);
    expect(doc.getElementById("p").contains(doc.getElementById("flow"))).toBe(true);
  });
});

d("the German catalogue (po/de.po)", () => {
  test("its header", () => {
    expect(de.header).toMatch(/^Language: de$/m);
    expect(de.header).toMatch(/^Content-Type: text\/plain; charset=UTF-8$/m);
    expect(de.plural).toBe("(n != 1)");
  });

  test("real UI strings in German, with real plural forms", () => {
    german();
    const connected = { signed_in: true, paused: false, state: "up-to-date" };
    expect(describe({ kind: "file", state: "online-only", sync: "synced" }).words).toBe("Online verfügbar");
    expect(describe({ kind: "file", state: "local", sync: "synced" }).words).toBe("Auf diesem Gerät");
    expect(describe({ kind: "file", state: "partial", sync: "synced", percent: 42.7 })).toMatchObject({
      words: "Teilweise auf diesem Gerät",
      detail: "42 %",
    });
    expect(describe({ kind: "dir", setting: "pinned", counts: { pinned: 3, online_only: 1 } }).detail).toBe("3 immer hier, 1 nur online");
    expect(overall({ connected: true, roots: [connected], transfers: { a: { finished: false } } }).tooltip).toBe(
      "Skyfill: 1 Datei wird synchronisiert",
    );
    expect(overall({ connected: true, roots: [connected], transfers: { a: {}, b: {} } }).tooltip).toBe(
      "Skyfill: 2 Dateien werden synchronisiert",
    );
    expect(overall({ connected: true, roots: [connected] }).tooltip).toBe("Skyfill: aktuell");
    expect(tn("{n} file", "{n} files", 0)).toBe("0 Dateien");
    expect(tn("{n} file", "{n} files", 1)).toBe("1 Datei");
    expect(tn("{n} file", "{n} files", 2)).toBe("2 Dateien");
    expect(tn("{n} folder", "{n} folders", 1)).toBe("1 Ordner");
    expect(formatBytes(1500)).toBe("1,5 kB");
    expect(formatEta(3900)).toBe("1 h 5 min");
    const G = 1e9;
    expect(storage({ size: 10 * G, local_bytes: 2.5 * G, counts: { pinned: 1 } }, { max_bytes: 5 * G }, 40 * G).summary).toBe(
      "2,5 GB von 10 GB auf diesem Gerät · 1 Datei bleibt immer hier · Budget 5,0 GB · 40 GB frei auf dem Datenträger",
    );
    expect(storage({ size: 1, local_bytes: 1, counts: { pinned: 3 } }, null).summary).toContain("3 Dateien bleiben immer hier");
    const x = { done: 10e6, total: 100e6, samples: [{ at: 0, done: 0 }, { at: 10_000, done: 10e6 }] };
    expect(transferText(x, 10_000)).toBe("10 MB von 100 MB · 1,0 MB/s · noch 2 min");
    const now = new Date(2026, 5, 15, 12, 0).getTime();
    expect(formatDate(new Date(2026, 5, 14, 9, 5).getTime() / 1000, now)).toBe("Gestern 09:05");
    expect(formatDate(new Date(2026, 2, 3).getTime() / 1000, now)).toBe("3. März");
    expect(t("This looks like Nextcloud: {button} to get an app password.", { button: "X" })).toBe(
      "Das sieht nach Nextcloud aus: X, um ein App-Passwort zu erhalten.",
    );
  });

  test("every message of the JS modules is translated", () => {
    const dir = new URL("public/src/", new URL("../", import.meta.url));
    const literal = String.raw`("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|\`(?:[^\`\\$]|\\.)*\`)`;
    const call = new RegExp(String.raw`(?<![\w.$])(tn|tParts|t)\(\s*${literal}(?:\s*,\s*${literal})?`, "g");
    const cook = (s) => (s[0] === "`" ? s.slice(1, -1).replace(/\\(.)/g, "$1") : JSON.parse(s[0] === "'" ? `"${s.slice(1, -1).replace(/\\'/g, "'").replace(/"/g, '\\"')}"` : s));
    const byId = new Map(de.entries.map((e) => [e.id, e]));
    let seen = 0;
    for (const f of readdirSync(dir).filter((f) => f.endsWith(".js"))) {
      for (const m of readFileSync(new URL(f, dir), "utf8").matchAll(call)) {
        const id = cook(m[2]);
        const where = `${f}: ${m[0].slice(0, 60)}`;
        const e = byId.get(id);
        expect(e, `${where}: not in po/de.po (run scripts/i18n update)`).toBeDefined();
        expect(de.messages[id], `${where}: not translated in po/de.po`).toBeDefined();
        if (m[1] === "tn") {
          expect(e.plural, `${where}: no msgid_plural`).toBe(cook(m[3]));
          expect(e.strs.length, where).toBe(2);
        }
        seen++;
      }
    }
    expect(seen).toBeGreaterThan(100);
  });

  test("every message of index.html is translated, and the page renders in German", () => {
    const w = new Window();
    const html = readFileSync(new URL("ui/public/index.html", root), "utf8");
    w.document.write(html);
    const doc = w.document;
    german();
    translatePage(doc);
    const ids = [];
    for (const e of doc.querySelectorAll("[data-i18n]")) ids.push(e.getAttribute("data-i18n"));
    for (const a of ["data-i18n-title", "data-i18n-placeholder", "data-i18n-aria-label"])
      for (const e of doc.querySelectorAll(`[${a}]`)) ids.push(e.getAttribute(a));
    expect(ids.length).toBeGreaterThan(60);
    for (const id of ids) expect(de.messages[id], `index.html: ${JSON.stringify(id)} not translated in po/de.po`).toBeDefined();
    expect(doc.getElementById("tab-settings").textContent).toBe("Einstellungen");
    expect(doc.getElementById("act-free").textContent).toBe("Speicherplatz freigeben");
    expect(doc.getElementById("filter").getAttribute("placeholder")).toBe("Ordner filtern");
    expect(doc.querySelector('#row-menu [data-action="offline"]').textContent).toBe("Offline verfügbar machen");
    // The Nextcloud button stays the page's, inside its sentence.
    expect(doc.getElementById("w-nextcloud").contains(doc.getElementById("w-flow"))).toBe(true);
    expect(doc.getElementById("w-nextcloud").textContent).toBe("Das sieht nach Nextcloud aus: Im Browser anmelden, um ein App-Passwort zu erhalten.");
    // Every id the app reaches is still there.
    for (const id of (readFileSync(new URL("ui/public/src/app.js", root), "utf8").match(/\$\("([\w-]+)"\)/g) ?? []))
      expect(doc.getElementById(id.slice(3, -2)), id).not.toBeNull();
  });
});
