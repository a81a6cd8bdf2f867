import { afterEach, beforeEach, describe as d, expect, test, vi } from "vitest";
import { readFileSync, readdirSync } from "node:fs";
import * as api from "../public/src/api.js";

let invoke;
let listeners;

beforeEach(() => {
  invoke = vi.fn(async () => "ok");
  listeners = {};
  globalThis.__TAURI__ = {
    core: { invoke },
    event: {
      listen: vi.fn(async (name, f) => {
        listeners[name] = f;
      }),
    },
  };
});

afterEach(() => {
  delete globalThis.__TAURI__;
});

d("commands", () => {
  test("each function invokes its command with the arguments Rust takes", async () => {
    const form = { kind: "webdav", url: "dav://h/" };
    const calls = [
      [() => api.connection(), "connection", undefined],
      [() => api.homeDir(), "home_dir", undefined],
      [() => api.roots(), "roots", undefined],
      [() => api.list("/c"), "list", { path: "/c" }],
      [() => api.listPage("/c", 400, 200), "list_page", { path: "/c", offset: 400, limit: 200, order: null }],
      [
        () => api.listPage("/c", 0, 200, { sort: "size", descending: true, filter: "x" }),
        "list_page",
        { path: "/c", offset: 0, limit: 200, order: { sort: "size", descending: true, filter: "x" } },
      ],
      [() => api.status("/c"), "status", { path: "/c" }],
      [() => api.freeSpace("/c"), "free_space", { path: "/c" }],
      [() => api.icons(["folder"]), "icons", { names: ["folder"] }],
      [() => api.act("offline", ["/c/a", "/c/b"]), "act", { action: "offline", paths: ["/c/a", "/c/b"] }],
      [() => api.setPaused(true), "set_paused", { paused: true }],
      [() => api.syncNow(), "sync_now", undefined],
      [() => api.configGet(), "config_get", undefined],
      [() => api.configSet("budget", "10%", "/c"), "config_set", { key: "budget", value: "10%", root: "/c" }],
      [() => api.configSet("poll_interval", "30"), "config_set", { key: "poll_interval", value: "30", root: null }],
      [() => api.removeRoot("/c"), "remove_root", { local: "/c", mode: "keep_local" }],
      [() => api.openPath("/c/a"), "open_path", { path: "/c/a" }],
      [() => api.reveal("/c/a"), "reveal", { path: "/c/a" }],
      [() => api.testConnection(form), "test_connection", { form }],
      [() => api.addAccount(form, "/c"), "add_account", { form, local: "/c" }],
      [() => api.nextcloudLogin("cloud.example.org"), "nextcloud_login", { server: "cloud.example.org" }],
      [() => api.autostartEnabled(), "autostart_enabled", undefined],
      [() => api.setAutostart(false), "set_autostart", { enabled: false }],
    ];
    for (const [f, cmd, args] of calls) {
      invoke.mockClear();
      expect(await f()).toBe("ok");
      expect(invoke).toHaveBeenCalledTimes(1);
      expect(invoke).toHaveBeenCalledWith(cmd, args);
    }
  });

  test("the catalogue: the Rust side's, else English (outside Tauri, or an older Rust side)", async () => {
    const de = { lang: "de", plural: "n != 1", messages: { Open: ["Öffnen"] } };
    invoke.mockResolvedValueOnce(de);
    expect(await api.catalogue()).toEqual(de);
    expect(invoke).toHaveBeenCalledWith("catalogue", undefined);
    const english = { lang: "en", plural: "n != 1", messages: {} };
    invoke.mockRejectedValueOnce("Command catalogue not found");
    expect(await api.catalogue()).toEqual(english);
    delete globalThis.__TAURI__;
    expect(await api.catalogue()).toEqual(english);
  });

  test("failures become ApiErrors with the code to branch on", async () => {
    invoke.mockRejectedValueOnce({ code: "not_a_root", message: "/x is not in a sync root" });
    const e = await api.list("/x").catch((e) => e);
    expect(e).toBeInstanceOf(api.ApiError);
    expect(e.code).toBe("not_a_root");
    expect(e.message).toBe("/x is not in a sync root");
    expect(String(e)).toBe("/x is not in a sync root");
    invoke.mockRejectedValueOnce({ code: "unreachable", message: "The Skyfill daemon is not running." });
    expect((await api.roots().catch((e) => e)).code).toBe("unreachable");
    // Anything else (a Tauri failure, a bare string) is internal.
    invoke.mockRejectedValueOnce("command act not found");
    const o = await api.act("free", ["/c"]).catch((e) => e);
    expect(o.code).toBe("internal");
    expect(o.message).toBe("command act not found");
  });

  test("an unknown command is told apart from the command's own failures", async () => {
    // Tauri's words when the Rust side has no such command (an older build).
    invoke.mockRejectedValueOnce("Command list_page not found");
    const e = await api.listPage("/c", 0, 200).catch((e) => e);
    expect(e.code).toBe("internal");
    expect(api.isUnknownCommand(e)).toBe(true);
    // A daemon that does not know the request.
    expect(api.isUnknownCommand(new api.ApiError("bad_request", "unknown variant `list_page`"))).toBe(true);
    // The command's own failures are not.
    expect(api.isUnknownCommand(new api.ApiError("not_found", "/c/x: No such file"))).toBe(false);
    expect(api.isUnknownCommand(new api.ApiError("bad_request", "offset past the end"))).toBe(false);
    expect(api.isUnknownCommand(new api.ApiError("unreachable", "The daemon is not running"))).toBe(false);
    expect(api.isUnknownCommand(new api.ApiError("internal", "disk I/O error"))).toBe(false);
  });

  test("no other module calls invoke or reaches Tauri", () => {
    const dir = new URL("../public/src/", import.meta.url);
    for (const f of readdirSync(dir).filter((f) => f.endsWith(".js") && f !== "api.js")) {
      const src = readFileSync(new URL(f, dir), "utf8");
      expect(src, f).not.toMatch(/invoke\s*\(|__TAURI__/);
    }
  });
});

d("events", () => {
  test("each daemon event goes to its one handler", () => {
    const kinds = ["state", "progress", "job", "error", "conflict", "root", "lagged"];
    const h = Object.fromEntries(kinds.map((k) => [k, vi.fn()]));
    for (const k of kinds) {
      const ev = { event: k, path: "/c/a" };
      api.dispatch(ev, h);
      expect(h[k]).toHaveBeenCalledWith(ev);
    }
    for (const k of kinds) expect(h[k]).toHaveBeenCalledTimes(1);
    // Unknown kinds and missing handlers are ignored.
    expect(api.dispatch({ event: "future" }, h)).toBeUndefined();
    expect(api.dispatch({ event: "state" }, {})).toBeUndefined();
    for (const k of kinds) expect(h[k]).toHaveBeenCalledTimes(1);
  });

  test("subscribe listens to daemon events, the connection and view requests", async () => {
    const h = { root: vi.fn(), connection: vi.fn(), view: vi.fn() };
    await api.subscribe(h);
    expect(Object.keys(listeners).sort()).toEqual(["connection", "daemon", "show-view"]);
    listeners.daemon({ payload: { event: "root", local: "/c", change: "state" } });
    expect(h.root).toHaveBeenCalledWith({ event: "root", local: "/c", change: "state" });
    listeners.connection({ payload: { connected: false, message: "stopped", daemon: null } });
    expect(h.connection).toHaveBeenCalledWith({ connected: false, message: "stopped", daemon: null });
    listeners["show-view"]({ payload: "activity" });
    expect(h.view).toHaveBeenCalledWith("activity");
  });
});
