// The window's one way to the Rust side (src-tauri/src/commands.rs): every `invoke` and the
// event subscription are here, and nowhere else. Each command is a function with the
// protocol's types (src/ipc/proto.rs, doc/IPC.md); a failure is an ApiError carrying the
// daemon's error code (or "unreachable") and plain words. Daemon events are decoded in one
// place (`dispatch`).

/**
 * The daemon's error codes, or "unreachable" when the daemon cannot be reached.
 * @typedef {"bad_request"|"version_mismatch"|"not_authorized"|"not_found"|"not_a_root"|
 *   "invalid_root"|"busy"|"remote"|"auth"|"unsynced"|"budget"|"internal"|"unreachable"} ErrorCode
 */
/** @typedef {"up-to-date"|"syncing"|"offline"|"paused"|"needs-sign-in"|"error"} RootState */
/** @typedef {"online-only"|"partial"|"local"|"pinned"} Availability */
/** @typedef {"synced"|"pending"|"uploading"|"conflict"|"error"} SyncState */
/** @typedef {"inherit"|"pinned"|"online-only"} PinSetting */
/** @typedef {{max_bytes: number} | {keep_free_percent: number}} Budget */
/**
 * @typedef {object} RootInfo
 * @property {string} id
 * @property {string} local
 * @property {string} remote
 * @property {?string} user
 * @property {number} owner
 * @property {boolean} paused
 * @property {boolean} signed_in
 * @property {boolean} secret_persisted
 * @property {?Budget} budget
 * @property {?string} last_error  shown to the user, never read to decide a state
 * @property {RootState} state     decided by the daemon
 */
/**
 * @typedef {object} PathStatus
 * @property {string} path
 * @property {"file"|"dir"} kind
 * @property {Availability} state
 * @property {SyncState} sync
 * @property {number} size
 * @property {number} local_bytes
 * @property {number} [percent]
 * @property {PinSetting} setting
 * @property {{online_only: number, partial: number, local: number, pinned: number}} [counts]
 */
/**
 * @typedef {object} BatchResult
 * @property {number} files
 * @property {number} bytes
 * @property {number} settings
 * @property {boolean} deferred
 * @property {{path: string, reason: string}[]} skipped
 */
/**
 * @typedef {object} UserSettings
 * @property {number} poll_interval_secs
 * @property {number} download_limit
 * @property {number} upload_limit
 * @property {string[]} never_download
 * @property {string[]} ignore
 */
/** @typedef {{settings: UserSettings, system_never_download: string[], roots: RootInfo[]}} ConfigResult */
/** @typedef {{kept: number, removed: number, unsynced_kept: string[]}} RemoveResult */
/** @typedef {{root_id: string, files: number, dirs: number, rejected: number, seconds: number}} AddRootResult */
/** @typedef {{connected: boolean, message: ?string, daemon: ?string}} Connection */
/**
 * What the wizard collected (src-tauri/src/wizard.rs `Form`).
 * @typedef {{kind: string, url: string, user?: ?string, endpoint?: ?string, region?: ?string,
 *   path_style?: boolean, secret?: ?string}} Form
 */
/** @typedef {"offline"|"free"|"online-only"|"download"} Action */
/** @typedef {"refuse"|"keep_local"|"download"} RemoveMode */

/** A failed command: `code` to branch on, `message` to show. */
export class ApiError extends Error {
  /** @param {ErrorCode} code @param {string} message */
  constructor(code, message) {
    super(message);
    this.name = "ApiError";
    /** @type {ErrorCode} */
    this.code = code;
  }

  /** What a command rejected with (`{code, message}` from Rust, or a bare string). */
  static from(e) {
    if (e instanceof ApiError) return e;
    if (e && typeof e === "object" && typeof e.code === "string")
      return new ApiError(e.code, String(e.message ?? ""));
    return new ApiError("internal", String(e?.message ?? e));
  }

  toString() {
    return this.message;
  }
}

/**
 * The failure says the command does not exist: an older build of the Rust side (Tauri rejects
 * with "Command NAME not found"), or a daemon that does not know the request.
 */
export function isUnknownCommand(e) {
  const m = String(e?.message ?? e ?? "");
  const code = e?.code ?? "internal";
  if (code === "internal") return /^command \S+ not found$/i.test(m.trim());
  if (code === "bad_request") return /unknown (variant|op|request|command)/i.test(m);
  return false;
}

const tauri = () => globalThis.__TAURI__;

/** The one `invoke`. */
async function call(cmd, args) {
  try {
    return await tauri().core.invoke(cmd, args);
  } catch (e) {
    throw ApiError.from(e);
  }
}

// ------------------------------------------------------------------ commands

/** @returns {Promise<Connection>} */
export const connection = () => call("connection");
/** @returns {Promise<string>} */
export const homeDir = () => call("home_dir");
/** @returns {Promise<RootInfo[]>} */
export const roots = () => call("roots");
/** @param {string} path @returns {Promise<PathStatus[]>} */
export const list = (path) => call("list", { path });
/**
 * Rows offset..offset+limit of a folder, in `list`'s order (folders first, then by name) or in
 * `order`, and how many entries the folder has (that the filter keeps).
 * @param {string} path @param {number} offset @param {number} limit @param {?PageOrder} [order]
 * @returns {Promise<{entries: PathStatus[], total: number}>}
 */
export const listPage = (path, offset, limit, order = null) => call("list_page", { path, offset, limit, order });
/**
 * How `listPage` orders and filters (folders first always).
 * @typedef {{sort: "name"|"size"|"modified", descending: boolean, filter: ?string}} PageOrder
 */
/** @param {string} path @returns {Promise<PathStatus>} a file's or folder's state (a folder's totals) */
export const status = (path) => call("status", { path });
/** @param {string} path @returns {Promise<?number>} free bytes on the disk holding it */
export const freeSpace = (path) => call("free_space", { path });
/** @param {string[]} names freedesktop icon names @returns {Promise<Object<string, string>>} name -> data URL */
export const icons = (names) => call("icons", { names });
/** @param {Action} action @param {string[]} paths @returns {Promise<BatchResult>} */
export const act = (action, paths) => call("act", { action, paths });
/** @param {boolean} paused @returns {Promise<RootInfo[]>} */
export const setPaused = (paused) => call("set_paused", { paused });
export const syncNow = () => call("sync_now");
/** @returns {Promise<ConfigResult>} */
export const configGet = () => call("config_get");
/**
 * A setting: a string as typed ("5M", "10%", "none") or the protocol's value (a list).
 * @param {string} key @param {string|string[]|number} value @param {?string} [root]
 * @returns {Promise<void>}
 */
export const configSet = (key, value, root = null) => call("config_set", { key, value, root });
/** @param {string} local @param {RemoveMode} [mode] @returns {Promise<RemoveResult>} */
export const removeRoot = (local, mode = "keep_local") => call("remove_root", { local, mode });
/** @param {string} path @returns {Promise<void>} */
export const openPath = (path) => call("open_path", { path });
/** @param {string} path @returns {Promise<void>} */
export const reveal = (path) => call("reveal", { path });
/** @param {Form} form @returns {Promise<string>} what worked, in words */
export const testConnection = (form) => call("test_connection", { form });
/** @param {Form} form @param {string} local @returns {Promise<AddRootResult>} */
export const addAccount = (form, local) => call("add_account", { form, local });
/** @param {string} server @returns {Promise<{server: string, user: string, password: string}>} */
export const nextcloudLogin = (server) => call("nextcloud_login", { server });
/** @returns {Promise<boolean>} */
export const autostartEnabled = () => call("autostart_enabled");
/** @param {boolean} enabled @returns {Promise<void>} */
export const setAutostart = (enabled) => call("set_autostart", { enabled });

/**
 * The messages in the desktop's language (po/LL.po, chosen by the Rust side from LANGUAGE,
 * LC_ALL, LC_MESSAGES, LANG): `{lang, plural, messages: {msgid: [forms]}}` for i18n.js.
 * English (no messages) outside Tauri (Vitest) and when the Rust side cannot give one (an
 * older build without the command): the window always starts.
 * @returns {Promise<{lang: string, plural: string, messages: Object<string, string[]>}>}
 */
export async function catalogue() {
  const english = { lang: "en", plural: "n != 1", messages: {} };
  if (!tauri()?.core) return english;
  try {
    const c = await call("catalogue");
    return c && typeof c === "object" && c.messages ? c : english;
  } catch {
    return english;
  }
}

/** Tells the app the page is drawn (it logs how long opening the window took, and the
 * language the page shows: `lang` and the Files tab's words). */
export const windowReady = (lang, tab, toolbarLines) => call("window_ready", { lang, tab, toolbarLines });

/** Closes the window (the app stays in the tray; the window's web view is destroyed). */
export const closeWindow = () => call("close_window");

// ------------------------------------------------------------------ events

/**
 * What the window does with each daemon event (all optional).
 * @typedef {object} Handlers
 * @property {(ev: {path: string, state: Availability, sync: SyncState, size: number, local_bytes: number}) => void} [state]
 * @property {(ev: {path: string, direction: "down"|"up", done: number, total: number, pid: ?number, app: ?string}) => void} [progress]
 * @property {(ev: {request: number, job: string, path: string, files_done: number, files_total: number, bytes_done: number, bytes_total: number, finished: boolean}) => void} [job]
 * @property {(ev: {path: ?string, code: ErrorCode, message: string}) => void} [error]
 * @property {(ev: {path: string, copy: string}) => void} [conflict]
 * @property {(ev: {local: string, change: "added"|"removed"|"paused"|"resumed"|"signed-in"|"online"|"state"}) => void} [root]
 * @property {(ev: {missed: number}) => void} [lagged]
 * @property {(c: Connection) => void} [connection]  the daemon connection changed
 * @property {(view: string) => void} [view]  show a view of the window
 */

/** Hands one daemon event to its handler: the one place events are decoded. */
export function dispatch(ev, /** @type {Handlers} */ h) {
  switch (ev?.event) {
    case "state":
      return h.state?.(ev);
    case "progress":
      return h.progress?.(ev);
    case "job":
      return h.job?.(ev);
    case "error":
      return h.error?.(ev);
    case "conflict":
      return h.conflict?.(ev);
    case "root":
      return h.root?.(ev);
    case "lagged":
      return h.lagged?.(ev);
    default:
      return undefined;
  }
}

/** Subscribes the handlers to the daemon's events, the connection and view requests. */
export async function subscribe(/** @type {Handlers} */ h) {
  const listen = tauri().event.listen;
  await listen("daemon", (e) => dispatch(e.payload, h));
  await listen("connection", (e) => h.connection?.(e.payload));
  await listen("show-view", (e) => h.view?.(e.payload));
}
