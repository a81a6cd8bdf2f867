// Contrast of the window's text in the light and the dark theme (the palettes of
// public/style.css, read from the file): every text colour on every surface it is drawn on
// meets WCAG 2 AA for normal text (4.5:1). The E2E's accessibility audit checks the real
// window in the theme each run has; this checks both palettes whatever the desktop's theme.
import { expect, test } from "vitest";
import { readFileSync } from "node:fs";

const css = readFileSync(new URL("../public/style.css", import.meta.url), "utf8");

function palette(block) {
  const vars = {};
  for (const m of block.matchAll(/--([a-z-]+):\s*(#[0-9a-f]{6})/gi)) vars[m[1]] = m[2];
  return vars;
}
const light = palette(/:root\s*\{([^}]*)\}/.exec(css)[1]);
const dark = { ...light, ...palette(/prefers-color-scheme:\s*dark\)\s*\{\s*:root\s*\{([^}]*)\}/.exec(css)[1]) };

const rgb = (h) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16));
const hex = (c) => "#" + c.map((v) => Math.round(v).toString(16).padStart(2, "0")).join("");
const luminance = (h) => {
  const [r, g, b] = rgb(h).map((v) => {
    const s = v / 255;
    return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const ratio = (a, b) => {
  const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p);
  return (x + 0.05) / (y + 0.05);
};
// color-mix(in srgb, A P%, transparent) drawn over B.
const over = (a, p, b) => hex(rgb(a).map((v, i) => v * p + rgb(b)[i] * (1 - p)));

for (const [name, p] of [["light", light], ["dark", dark]]) {
  test(`${name} theme: text meets 4.5:1 on every surface`, () => {
    const surfaces = {
      bg: p.bg,
      panel: p.panel,
      "selected row": over(p.accent, 0.14, p.bg),
      "focused row": over(p.accent, 0.08, p.bg),
      "menu item in focus": over(p.accent, 0.14, p.panel),
      banner: over(p.bad, 0.1, p.bg),
    };
    const low = [];
    for (const [s, back] of Object.entries(surfaces)) {
      for (const t of ["fg", "muted", "accent", "ok", "warn", "bad"]) {
        const r = ratio(p[t], back);
        if (r < 4.5) low.push(`${t} ${p[t]} on ${s} ${back}: ${r.toFixed(2)}`);
      }
    }
    const r = ratio(p["on-accent"], p.accent);
    if (r < 4.5) low.push(`on-accent on accent: ${r.toFixed(2)}`);
    expect(low).toEqual([]);
  });
}

test("the palettes differ (the dark block was found)", () => {
  expect(dark.bg).not.toBe(light.bg);
  expect(Object.keys(light)).toEqual(expect.arrayContaining(["fg", "muted", "accent", "on-accent"]));
});
