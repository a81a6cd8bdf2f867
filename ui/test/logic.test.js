import { describe as d, expect, test } from "vitest";
import {
  actionsFor,
  applyProgress,
  applyState,
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
    t = applyProgress(t, { path: "/c/a", direction: "down", done: 500, total: 1000 }, 1000);
    expect(t["/c/a"].rate).toBe(500);
    expect(t["/c/a"].eta).toBe("1 s");
    expect(t["/c/a"].finished).toBe(false);
    t = applyProgress(t, { path: "/c/a", direction: "down", done: 1000, total: 1000 }, 2000);
    expect(t["/c/a"].finished).toBe(true);
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
    const n = applyState(e, { path: "/c/a", state: "local", sync: "synced", size: 10, local_bytes: 10 });
    expect(n[0].state).toBe("local");
    expect(n[0].percent).toBe(100);
    expect(n[1]).toBe(e[1]);
    expect(applyState(e, { path: "/elsewhere" })).toBe(e);
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
