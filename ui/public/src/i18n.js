// Translations of the window: owns the catalogue in use (the Rust side's `catalogue` command,
// read from po/LL.po for the desktop's language; English when there is none), looking messages
// up (`t`, `tn`), the plural rule (a parser of gettext's plural formulas, never eval), the
// locale for Intl's number, list and date formats, and translating the page's static markup
// (`data-i18n`, `data-i18n-title`, `data-i18n-placeholder`, `data-i18n-aria-label`). A message's
// id is its English text; placeholders are `{name}`. scripts/i18n extracts the ids of every
// t(...) and tn(...) call with literal strings here and in the other modules, and of the
// data-i18n attributes of index.html: the ids must stay literals.

/** @typedef {{lang: string, plural: string, messages: Object<string, string[]>}} Catalogue */

/** The English catalogue: no messages, every id is its own text. */
export const ENGLISH = Object.freeze({ lang: "en", plural: "n != 1", messages: Object.freeze({}) });

const PLACEHOLDER = /\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

let current = {
  lang: "en",
  locale: "en",
  plural: (n) => (n !== 1 ? 1 : 0),
  /** @type {Map<string, string[]>} */
  messages: new Map(),
};
/** Intl formatters of the current locale, made once each. */
let formats = new Map();

// ------------------------------------------------------------------ plural formulas

/**
 * Compiles a gettext plural formula (`n != 1`, or a whole `nplurals=3; plural=(...);` header)
 * into a function from a count to a form index: C's operators on integers (`? :`, `||`, `&&`,
 * `==`, `!=`, `<`, `<=`, `>`, `>=`, `+`, `-`, `*`, `/`, `%`, `!`, parentheses), `n` and numbers,
 * nothing else. Returns null for anything it cannot read.
 */
export function compilePlural(source) {
  let s = String(source ?? "");
  const header = /plural\s*=\s*([^;]*)/.exec(s);
  if (header) s = header[1];
  if (s.length > 500) return null;
  const tokens = [];
  const re = /\s*(?:(\d+)|(n)|(\|\||&&|==|!=|<=|>=|[-+*/%<>!?:()]))\s*/y;
  while (re.lastIndex < s.length) {
    const at = re.lastIndex;
    const m = re.exec(s);
    if (!m || re.lastIndex === at) return null;
    tokens.push(m[1] !== undefined ? { num: Number(m[1]) } : m[2] ? { n: true } : { op: m[3] });
  }
  let i = 0;
  const peek = () => tokens[i]?.op;
  const fail = () => {
    throw new SyntaxError("plural formula");
  };
  const bin = (next, ops, f) => () => {
    let left = next();
    while (ops.includes(peek())) {
      const op = tokens[i++].op;
      const a = left;
      const b = next();
      left = (n) => f(op, a(n), b(n));
    }
    return left;
  };
  const num = (x) => (x ? 1 : 0);
  const primary = () => {
    const tok = tokens[i++];
    if (!tok) fail();
    if (tok.num !== undefined) return () => tok.num;
    if (tok.n) return (n) => n;
    if (tok.op === "!") {
      const a = primary();
      return (n) => num(!a(n));
    }
    if (tok.op === "(") {
      const e = ternary();
      if (tokens[i++]?.op !== ")") fail();
      return e;
    }
    return fail();
  };
  const mul = bin(primary, ["*", "/", "%"], (op, a, b) =>
    op === "*" ? a * b : b === 0 ? NaN : op === "/" ? Math.trunc(a / b) : a % b);
  const add = bin(mul, ["+", "-"], (op, a, b) => (op === "+" ? a + b : a - b));
  const rel = bin(add, ["<", "<=", ">", ">="], (op, a, b) =>
    num(op === "<" ? a < b : op === "<=" ? a <= b : op === ">" ? a > b : a >= b));
  const eq = bin(rel, ["==", "!="], (op, a, b) => num(op === "==" ? a === b : a !== b));
  const and = bin(eq, ["&&"], (_, a, b) => num(a && b));
  const or = bin(and, ["||"], (_, a, b) => num(a || b));
  function ternary() {
    const c = or();
    if (peek() !== "?") return c;
    i++;
    const a = ternary();
    if (tokens[i++]?.op !== ":") fail();
    const b = ternary();
    return (n) => (c(n) ? a(n) : b(n));
  }
  try {
    const f = ternary();
    if (i !== tokens.length) return null;
    return (n) => f(Math.abs(Math.trunc(Number(n) || 0)));
  } catch {
    return null;
  }
}

// ------------------------------------------------------------------ the catalogue

/**
 * A catalogue's `lang` ("de", "pt_BR", "sr@latin") as a BCP 47 tag for Intl and `<html lang>`:
 * the web view's own locale (from the desktop's, with its region: "de-AT", "en-GB") when it is
 * of the same language, else the catalogue's.
 */
function localeOf(lang) {
  try {
    const tag = Intl.getCanonicalLocales(String(lang || "en").split(/[.@]/)[0].replace(/_/g, "-"))[0] || "en";
    const own = globalThis.navigator?.language;
    if (own && !tag.includes("-") && Intl.getCanonicalLocales(own)[0].split("-")[0] === tag) return Intl.getCanonicalLocales(own)[0];
    return tag;
  } catch {
    return "en";
  }
}

/**
 * Makes `cat` the catalogue in use (`{lang, plural, messages}` as the `catalogue` command
 * gives it); anything unreadable in it falls back to English.
 * @param {?Catalogue} cat
 */
export function setCatalogue(cat) {
  const messages = new Map();
  for (const [id, forms] of Object.entries(cat?.messages ?? {})) {
    const list = (Array.isArray(forms) ? forms : [forms]).map((f) => (typeof f === "string" ? f : ""));
    if (list.some((f) => f)) messages.set(id, list);
  }
  current = {
    lang: String(cat?.lang || "en"),
    locale: localeOf(cat?.lang),
    plural: compilePlural(cat?.plural ?? "n != 1") ?? compilePlural("n != 1"),
    messages,
  };
  formats = new Map();
}

/** The language of the catalogue in use ("en", "de"). */
export const lang = () => current.lang;

/** The locale for Intl's formats and `<html lang>` ("en", "de", "pt-BR"). */
export const locale = () => current.locale;

function format(key, make) {
  let f = formats.get(key);
  if (!f) formats.set(key, (f = make()));
  return f;
}

/** A number in the locale's digits and separators; `opts` as Intl.NumberFormat takes them. */
export function formatNumber(x, opts = {}) {
  if (typeof x !== "number" || !Number.isFinite(x)) return String(x);
  return format(`n${JSON.stringify(opts)}`, () => new Intl.NumberFormat(current.locale, opts)).format(x);
}

/** Items as the locale lists them ("a, b, c" in English). */
export function formatList(items) {
  try {
    return format("list", () => new Intl.ListFormat(current.locale, { type: "unit", style: "short" })).format(items);
  } catch {
    return items.join(", ");
  }
}

/** `s` with each `{name}` that `vars` has replaced by its value; other braces stay. */
function fill(s, vars) {
  return s.replace(PLACEHOLDER, (m, k) => (Object.prototype.hasOwnProperty.call(vars, k) ? String(vars[k]) : m));
}

/** The translation of `msgid` (itself when there is none), its placeholders filled from `vars`. */
export function t(msgid, vars = {}) {
  const forms = current.messages.get(msgid);
  return fill(forms?.[0] || msgid, vars);
}

/** The form of `one`/`other` for count `n` in the language's plural rule, `{n}` being the count in the locale's digits. */
export function tn(one, other, n, vars = {}) {
  return fill(plural(one, other, n), { n: formatNumber(n), ...vars });
}

function plural(one, other, n) {
  const forms = current.messages.get(one);
  if (forms) {
    const i = current.plural(n);
    if (Number.isInteger(i) && i >= 0 && forms[i]) return forms[i];
  }
  return n === 1 ? one : other;
}

/**
 * The translation of `msgid` in pieces for a sentence with an element in it: placeholders whose
 * value is an object (a DOM node) are pieces of their own, in the order the language puts them;
 * the others are filled in. Empty strings are left out.
 */
export function tParts(msgid, vars = {}) {
  return split(t(msgid, Object.fromEntries(Object.entries(vars).filter(([, v]) => typeof v !== "object" || v === null))), vars);
}

function split(s, nodes) {
  const out = [];
  let at = 0;
  for (const m of s.matchAll(PLACEHOLDER)) {
    const v = nodes[m[1]];
    if (typeof v !== "object" || v === null) continue;
    if (m.index > at) out.push(s.slice(at, m.index));
    out.push(v);
    at = m.index + m[0].length;
  }
  if (at < s.length) out.push(s.slice(at));
  return out;
}

// ------------------------------------------------------------------ static markup

const ATTRIBUTES = [
  ["data-i18n-title", "title"],
  ["data-i18n-placeholder", "placeholder"],
  ["data-i18n-aria-label", "aria-label"],
];

const collapse = (s) => s.replace(/\s+/g, " ").trim();

function within(root, selector) {
  const all = [...root.querySelectorAll(selector)];
  if (root.matches?.(selector)) all.unshift(root);
  return all;
}

/**
 * Translates the page's static markup: an element with `data-i18n` gets the translation of the
 * attribute's value (or, when empty, of its own text) as its text; one whose value has
 * placeholders keeps its children marked `data-i18n-slot="name"` and puts them where the
 * translation has `{name}`. `data-i18n-title`, `-placeholder` and `-aria-label` translate that
 * attribute (their value, or the attribute's own when empty). Each id is kept in its
 * attribute, so that translating again (another catalogue) starts from the English.
 */
export function translatePage(root = document) {
  for (const e of within(root, "[data-i18n]")) {
    let id = e.getAttribute("data-i18n");
    if (!id) {
      id = collapse(e.textContent);
      e.setAttribute("data-i18n", id);
    }
    const slots = [...e.querySelectorAll("[data-i18n-slot]")].filter((s) => s.parentElement?.closest("[data-i18n]") === e);
    if (!slots.length) {
      e.textContent = t(id);
      continue;
    }
    const named = Object.fromEntries(slots.map((s) => [s.getAttribute("data-i18n-slot"), s]));
    const pieces = split(t(id), named);
    // A slot the translation lost stays in the page (at the end): the app reaches it by id.
    for (const s of slots) if (!pieces.includes(s)) pieces.push(" ", s);
    e.replaceChildren(...pieces);
  }
  for (const [data, attr] of ATTRIBUTES) {
    for (const e of within(root, `[${data}]`)) {
      const id = e.getAttribute(data) || e.getAttribute(attr) || "";
      if (!id) continue;
      e.setAttribute(data, id);
      e.setAttribute(attr, t(id));
    }
  }
}
