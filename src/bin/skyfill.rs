//! `skyfill`: the command-line client. Every command is one or more requests on the daemon
//! socket (the protocol in `skyfill::ipc::proto`); secrets go through the user's keyring.
//!
//! Exit codes: 0 done; 1 refused or failed; 2 bad usage; 3 the daemon cannot be reached (or
//! speaks another protocol version); 4 partly done (some files were skipped, each with why).

use anyhow::{anyhow, Context};
use clap::{CommandFactory, Parser, Subcommand};
use skyfill::credentials;
use skyfill::ipc::client::{Client, ClientError};
use skyfill::ipc::proto::*;
use skyfill::remote::RemoteSpec;
use skyfill::{t, tn};
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[path = "skyfill/tree.rs"]
mod tree;

#[derive(Parser, Debug)]
#[command(
    name = "skyfill",
    version,
    about = "Skyfill: files on demand for Linux",
    long_about = "Skyfill keeps folders in two-way sync with WebDAV servers and S3 buckets while \
their files stay online-only until used. This is its command-line client; the daemon skyfilld \
does the work.\n\nExit codes: 0 done, 1 refused or failed, 2 bad usage, 3 daemon unreachable, \
4 partly done (some files skipped)."
)]
struct Args {
    /// Daemon socket.
    #[arg(
        long,
        global = true,
        default_value = "/run/skyfill/skyfill.sock",
        env = "SKYFILL_SOCKET"
    )]
    socket: PathBuf,
    /// Machine-readable output: one JSON object per line.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Bind an empty or new folder to a remote: dav://host[:port]/path, davs://host/path,
    /// s3://bucket[/prefix] or file:///path. Placeholders appear at once.
    AddRoot {
        /// The local folder (empty or new).
        local: PathBuf,
        #[command(flatten)]
        at: RemoteArgs,
        /// Read the secret (password, or ACCESS_KEY:SECRET_KEY for S3) from standard input
        /// (and store it in your keyring). Without it, the keyring entry is used, if any.
        #[arg(long)]
        secret_stdin: bool,
        /// Keep the secret only in your keyring: after a daemon restart, files wait until you
        /// sign in again (`skyfill login`, or the tray app does it).
        #[arg(long)]
        keyring_only: bool,
        /// Do not use the keyring at all.
        #[arg(long)]
        no_keyring: bool,
    },
    /// Unbind a sync root. Local files stay as ordinary files; online-only ones go away.
    /// Refuses while files have changes not on the server, unless told what to do.
    RemoveRoot {
        /// The sync folder.
        local: PathBuf,
        /// Keep unsynced files as ordinary local files and remove the root anyway.
        #[arg(long, conflicts_with = "download")]
        keep_local: bool,
        /// Download every online-only file first, then keep everything locally.
        #[arg(long)]
        download: bool,
    },
    /// Your sync roots.
    Roots,
    /// Availability and sync state of files and folders (all roots without a path): a folder
    /// with what is in it, as a tree.
    Status {
        /// Files or folders (none: every sync folder).
        paths: Vec<PathBuf>,
        /// Levels of a folder's contents to show (0: the folder alone; default 1 for a folder
        /// named, 0 for the roots).
        #[arg(long)]
        depth: Option<u32>,
        /// Entries shown per folder (the rest are counted).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Where the space goes: for each root (or folder), its bytes in the cloud and on this
    /// device, the budget, the free space of its disk, and its largest local items.
    Du {
        /// Sync folders or folders in them (none: every sync folder).
        paths: Vec<PathBuf>,
        /// How many of the largest local items to show.
        #[arg(long, default_value_t = 10)]
        top: usize,
    },
    /// Always keep on this device: download now; new files below a pinned folder follow.
    Pin {
        /// Also every file and folder below a folder (needed for a folder).
        #[arg(short, long)]
        recursive: bool,
        /// Files or folders in a sync folder.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Back to the default setting (files stay as they are).
    Unpin {
        /// Also every file and folder below a folder (needed for a folder).
        #[arg(short, long)]
        recursive: bool,
        /// Files or folders in a sync folder.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Free up space: make local files online-only (skips files with unsynced changes).
    Free {
        /// Also every file and folder below a folder (needed for a folder).
        #[arg(short, long)]
        recursive: bool,
        /// Files or folders in a sync folder.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Keep only in the cloud: like free, and new files below a folder stay online-only.
    OnlineOnly {
        /// Also every file and folder below a folder (needed for a folder).
        #[arg(short, long)]
        recursive: bool,
        /// Files or folders in a sync folder.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Download now without pinning.
    Hydrate {
        /// Also every file and folder below a folder (needed for a folder).
        #[arg(short, long)]
        recursive: bool,
        /// Files or folders in a sync folder.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Sign in: store a root's secret in your keyring and hand it to the daemon. Without a
    /// root, re-send the keyring secrets of every root that needs one.
    Login {
        /// The sync folder (none: every one that needs its secret).
        local: Option<PathBuf>,
        /// Read the secret from standard input instead of prompting.
        #[arg(long)]
        secret_stdin: bool,
        /// Keep the secret only in your keyring (not in the daemon's root-only store).
        #[arg(long)]
        keyring_only: bool,
    },
    /// Pause background transfers of one root (or all of yours). Opening files still works.
    Pause {
        /// The sync folder (none: all of yours).
        local: Option<PathBuf>,
    },
    /// Resume background transfers.
    Resume {
        /// The sync folder (none: all of yours).
        local: Option<PathBuf>,
    },
    /// Look for remote changes now.
    Sync {
        /// A sync folder (none: all of yours).
        path: Option<PathBuf>,
    },
    /// Show settings, or change one.
    Config {
        #[command(subcommand)]
        action: Option<ConfigCmd>,
    },
    /// Check the kernel, the daemon, each root's filesystem, credentials, server and clock.
    Doctor,
    /// Transfer counters of the daemon.
    Stats,
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
    /// Send one raw protocol request (JSON without id) and print the answer (debugging).
    #[command(hide = true)]
    Call {
        /// The request, as JSON.
        request: String,
    },
    /// List a remote recursively, without the daemon, and print the entry count and the
    /// seconds it took (benchmarks: the listing alone). Secret from SKYFILL_SECRET.
    #[command(hide = true)]
    ListRemote {
        #[command(flatten)]
        at: RemoteArgs,
    },
}

/// Where a root's files are: the remote and how to reach it.
#[derive(clap::Args, Debug)]
struct RemoteArgs {
    /// The remote's address. A user name may be part of it (davs://me@host/path), a password
    /// may not: give secrets with --secret-stdin or your keyring (`skyfill login` asks).
    remote: String,
    /// User name on the server.
    #[arg(long)]
    user: Option<String>,
    /// S3 endpoint URL (default: AWS for the region).
    #[arg(long)]
    endpoint: Option<String>,
    /// S3 region.
    #[arg(long)]
    region: Option<String>,
    /// S3 path-style addressing (most self-hosted S3 servers).
    #[arg(long)]
    path_style: bool,
}

impl RemoteArgs {
    /// The remote, refused when its address carries a password.
    fn spec(self) -> anyhow::Result<RemoteSpec> {
        refuse_password_in_url(&t!("the remote address"), &self.remote)?;
        if let Some(e) = &self.endpoint {
            refuse_password_in_url(&t!("the --endpoint address"), e)?;
        }
        Ok(RemoteSpec {
            url: self.remote,
            user: self.user,
            endpoint: self.endpoint,
            region: self.region,
            path_style: self.path_style,
        })
    }
}

/// Whether `url` carries a password in its userinfo (`scheme://user:password@host/...`).
/// Checked on the text, so an address the URL parser would reject is caught too.
fn url_has_password(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// A password in an address would be stored and shown with the root (`skyfill roots`, the
/// tray app, the daemon's registry and log) and is visible in the process list meanwhile.
fn refuse_password_in_url(what: &str, url: &str) -> anyhow::Result<()> {
    if url_has_password(url) {
        return Err(anyhow!(t!(
            "{what} contains a password; leave it out (a user name may stay: dav://me@host/path, or use --user) and give the secret with --secret-stdin, or from your keyring (`skyfill login ROOT` asks for it and stores it there)",
            what = what
        )));
    }
    Ok(())
}

/// The warning to print before a secret goes to a remote that sends it unencrypted (plain
/// HTTP WebDAV: HTTP Basic over `dav://` or `http://`); `None` for every other remote.
fn plaintext_secret_warning(remote: &str) -> Option<String> {
    let (scheme, _) = remote.split_once("://")?;
    let secure = match scheme.to_ascii_lowercase().as_str() {
        "dav" => "davs://",
        "http" => "https://",
        _ => return None,
    };
    Some(t!(
        "{scheme}:// sends your password unencrypted (HTTP Basic); use {secure} unless this server is on a trusted network",
        scheme = scheme.to_ascii_lowercase(),
        secure = secure
    ))
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Show your settings (the default).
    Get,
    /// Change a setting: poll-interval SECONDS, download-limit RATE, upload-limit RATE
    /// (like 5M for 5 MB/s, 0 for none), never-download PROG[,PROG...], ignore
    /// GLOB[,GLOB...] (names never synced, besides editors' temporary files), or with --root:
    /// budget SIZE|N%|none (N% keeps N percent of the disk free).
    Set {
        /// The setting's name.
        key: String,
        /// Its new value.
        value: String,
        /// The root, for per-root settings (budget).
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// Never let this program download (adds it to never-download).
    Block {
        /// The program's file name (like `baloo_file`).
        program: String,
    },
    /// Remove a program from never-download.
    Unblock {
        /// The program's file name.
        program: String,
    },
}

/// An error with the exit code it maps to.
struct Fail(u8, anyhow::Error);

impl From<anyhow::Error> for Fail {
    fn from(e: anyhow::Error) -> Self {
        Fail(1, e)
    }
}

impl From<ClientError> for Fail {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Connect { path, error } => Fail(
                3,
                anyhow!(t!(
                    "cannot connect to the Skyfill daemon at {path}: {error} (is skyfilld running?)",
                    path = path,
                    error = error
                )),
            ),
            ClientError::Timeout(_) => Fail(3, e.into()),
            ClientError::Daemon {
                code: ErrorCode::VersionMismatch,
                ..
            } => Fail(3, e.into()),
            ClientError::Daemon { code, message } => {
                let said = match code {
                    // (The daemon's own words may already say how; once is enough.)
                    ErrorCode::Auth if !message.contains("skyfill login") => t!(
                        "{message} (sign in with `skyfill login`)",
                        message = message
                    ),
                    _ => message,
                };
                Fail(1, anyhow!(said))
            }
            e => Fail(1, e.into()),
        }
    }
}

type Res<T = ()> = Result<T, Fail>;

/// What a batch command did, said per path with its file count.
#[derive(Debug, Clone, Copy)]
enum Verb {
    Pinned,
    Unpinned,
    OnlineOnly,
    Freed,
    Downloaded,
}

impl Verb {
    fn said(self, path: &str, files: u64) -> String {
        match self {
            Verb::Pinned => tn!(
                "pinned {path}: {n} file",
                "pinned {path}: {n} files",
                files,
                path = path
            ),
            Verb::Unpinned => tn!(
                "unpinned {path}: {n} file",
                "unpinned {path}: {n} files",
                files,
                path = path
            ),
            Verb::OnlineOnly => tn!(
                "online-only {path}: {n} file",
                "online-only {path}: {n} files",
                files,
                path = path
            ),
            Verb::Freed => tn!(
                "freed {path}: {n} file",
                "freed {path}: {n} files",
                files,
                path = path
            ),
            Verb::Downloaded => tn!(
                "downloaded {path}: {n} file",
                "downloaded {path}: {n} files",
                files,
                path = path
            ),
        }
    }
}

/// Bytes free for unprivileged use on the filesystem holding `path`.
use skyfill::fsutil::free_space;

/// `path` with the user's home folder written `~`.
fn home_relative(path: &str) -> String {
    match std::env::var("HOME") {
        Ok(h) if h.len() > 1 && (path == h || path.starts_with(&format!("{h}/"))) => {
            format!("~{}", &path[h.len()..])
        }
        _ => path.to_string(),
    }
}

/// A root's budget as people read it.
fn budget_text(b: Budget) -> String {
    match b {
        Budget::MaxBytes(n) => human(n),
        Budget::KeepFreePercent(p) => t!("keep {p}% of the disk free", p = p),
    }
}

/// An error about `path`, said once: the path first unless the message already names it,
/// and without the "(os error N)" the system's own words already say.
fn about(path: &str, e: &anyhow::Error) -> String {
    let msg = plain(&format!("{e:#}"));
    if msg.contains(path) {
        msg
    } else {
        format!("{path}: {msg}")
    }
}

/// `msg` without Rust's " (os error N)" suffixes.
fn plain(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find(" (os error ") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + " (os error ".len()..];
        match tail.find(')') {
            Some(j) if tail[..j].chars().all(|c| c.is_ascii_digit()) => rest = &tail[j + 1..],
            _ => {
                out.push_str(" (os error ");
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Absolute, lexically normalised path (the daemon refuses `..` itself, too).
fn abs(p: &Path) -> anyhow::Result<String> {
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    };
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out.to_str()
        .map(str::to_string)
        .context(t!("path is not UTF-8"))
}

use skyfill::model::human_bytes as human;

fn read_secret_stdin() -> anyhow::Result<String> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s)?;
    let s = s.trim_end_matches(['\n', '\r']).to_string();
    if s.is_empty() {
        return Err(anyhow!(t!("no secret on standard input")));
    }
    Ok(s)
}

struct Cli {
    socket: PathBuf,
    json: bool,
}

impl Cli {
    fn connect(&self) -> Res<Client> {
        Ok(Client::connect(&self.socket, "skyfill-cli")?)
    }

    fn print(&self, v: &impl serde::Serialize) {
        println!(
            "{}",
            if self.json {
                serde_json::to_string(v)
            } else {
                serde_json::to_string_pretty(v)
            }
            .unwrap_or_default()
        );
    }

    /// One JSON line of a typed result.
    fn line(v: &impl serde::Serialize) -> String {
        serde_json::to_string(v).unwrap_or_default()
    }

    /// Runs a request that may report `job` progress, with a progress bar on a terminal.
    fn call_job<T: serde::de::DeserializeOwned>(
        &self,
        c: &mut Client,
        body: RequestBody,
    ) -> Res<T> {
        let mut bar: Option<indicatif::ProgressBar> = None;
        let show = !self.json && std::io::stderr().is_terminal();
        let v = c.request_with(body, &mut |e| {
            if let (
                Event::Job {
                    bytes_done,
                    bytes_total,
                    files_done,
                    files_total,
                    finished,
                    ..
                },
                true,
            ) = (e, show)
            {
                if bytes_total == 0 {
                    return;
                }
                let b = bar.get_or_insert_with(|| {
                    let b = indicatif::ProgressBar::new(bytes_total);
                    b.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                    );
                    b
                });
                b.set_position(bytes_done);
                b.set_message(tn!(
                    "{done}/{n} file",
                    "{done}/{n} files",
                    files_total,
                    done = files_done
                ));
                if finished {
                    b.finish_and_clear();
                }
            }
        });
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        Ok(v?)
    }

    /// pin/unpin/free/online-only/hydrate over several paths.
    fn batch(&self, paths: &[PathBuf], verb: Verb, make: impl Fn(String) -> RequestBody) -> Res {
        let mut c = self.connect()?;
        let mut code = 0u8;
        for p in paths {
            let path = abs(p)?;
            match self.call_job::<BatchResult>(&mut c, make(path.clone())) {
                Ok(r) => {
                    if self.json {
                        let mut v = serde_json::to_value(&r).unwrap_or_default();
                        v["path"] = path.clone().into();
                        println!("{v}");
                    } else {
                        let mut said = verb.said(&path, r.files);
                        if r.bytes > 0 {
                            said = format!("{said}, {}", human(r.bytes));
                        }
                        if r.deferred {
                            said = format!("{said} {}", t!("(downloads wait: the root is paused)"));
                        }
                        println!("{said}");
                        for s in &r.skipped {
                            eprintln!(
                                "  {}",
                                t!("skipped {path}: {reason}", path = s.path, reason = s.reason)
                            );
                        }
                    }
                    if !r.skipped.is_empty() {
                        code = code.max(4);
                    }
                }
                Err(Fail(c, e)) => {
                    eprintln!("skyfill: {}", about(&path, &e));
                    code = code.max(c);
                }
            }
        }
        if code != 0 {
            return Err(Fail(code, anyhow!("")));
        }
        Ok(())
    }

    fn du(&self, paths: &[PathBuf], top: usize) -> Res {
        let mut c = self.connect()?;
        let roots = c.roots()?;
        let targets: Vec<String> = if paths.is_empty() {
            roots.iter().map(|r| r.local.clone()).collect()
        } else {
            paths
                .iter()
                .map(|p| abs(p))
                .collect::<anyhow::Result<_>>()?
        };
        if targets.is_empty() {
            println!(
                "{}",
                t!("no sync roots yet: add one with `skyfill add-root`")
            );
        }
        let mut code = 0;
        for path in targets {
            let st = match c.status(&path) {
                Ok(st) => st,
                Err(e) => {
                    let Fail(k, e) = Fail::from(e);
                    eprintln!("skyfill: {}", about(&path, &e));
                    code = k;
                    continue;
                }
            };
            // Everything in the folder, a page at a time, keeping only the largest.
            let mut items: Vec<PathStatus> = Vec::new();
            if st.kind == skyfill::model::Kind::Dir {
                let mut offset = 0u64;
                loop {
                    let page = c.list_page(&path, offset, 1000)?;
                    let n = page.entries.len() as u64;
                    items.extend(page.entries.into_iter().filter(|e| e.local_bytes > 0));
                    items.sort_by_key(|e| std::cmp::Reverse(e.local_bytes));
                    items.truncate(top);
                    offset += n;
                    if n == 0 || offset >= page.total {
                        break;
                    }
                }
            }
            let budget = roots
                .iter()
                .find(|r| r.local == path)
                .and_then(|r| r.budget);
            let free = free_space(&path);
            if self.json {
                let v = serde_json::json!({
                    "path": path, "size": st.size, "local_bytes": st.local_bytes,
                    "counts": st.counts, "budget": budget, "free_bytes": free,
                    "largest": items.iter().map(|e| serde_json::json!({
                        "path": e.path, "kind": e.kind, "local_bytes": e.local_bytes,
                    })).collect::<Vec<_>>(),
                });
                println!("{v}");
                continue;
            }
            let share = (st.local_bytes as f64 * 100.0 / st.size.max(1) as f64).min(100.0);
            println!("{}", home_relative(&path));
            println!(
                "  {}",
                t!(
                    "{here} on this device of {cloud} in the cloud ({share} %)",
                    here = human(st.local_bytes),
                    cloud = human(st.size),
                    share = format!("{share:.0}")
                )
            );
            if let Some(k) = &st.counts {
                println!(
                    "  {}",
                    tn!(
                        "{n} file local ({pinned} pinned), {partial} partly local, {online} online-only",
                        "{n} files local ({pinned} pinned), {partial} partly local, {online} online-only",
                        k.local + k.pinned,
                        pinned = k.pinned,
                        partial = k.partial,
                        online = k.online_only
                    )
                );
            }
            if let Some(b) = budget {
                println!("  {}", t!("budget: {budget}", budget = budget_text(b)));
            }
            if let Some(f) = free {
                println!("  {}", t!("free on its disk: {free}", free = human(f)));
            }
            if !items.is_empty() {
                println!("  {}", t!("largest on this device:"));
                let base = format!("{}/", path.trim_end_matches('/'));
                for e in &items {
                    let name = e.path.strip_prefix(&base).unwrap_or(&e.path);
                    let slash = if e.kind == skyfill::model::Kind::Dir {
                        "/"
                    } else {
                        ""
                    };
                    println!("  {:>10}  {name}{slash}", human(e.local_bytes));
                }
            }
        }
        if code != 0 {
            return Err(Fail(code, anyhow!("")));
        }
        Ok(())
    }

    fn status(&self, paths: &[PathBuf], depth: Option<u32>, limit: u32) -> Res {
        let mut c = self.connect()?;
        let mut rows: Vec<PathStatus> = Vec::new();
        let mut code = 0;
        if paths.is_empty() {
            rows = c.status_all()?;
        }
        for p in paths {
            let path = abs(p)?;
            match c.status(&path) {
                Ok(s) => rows.push(s),
                Err(e) => {
                    let Fail(k, e) = Fail::from(e);
                    eprintln!("skyfill: {}", about(&path, &e));
                    code = k;
                }
            }
        }
        if self.json {
            for s in &rows {
                let mut v = serde_json::json!({
                    "path": s.path, "state": s.state, "sync": s.sync,
                    "size": s.size, "local_bytes": s.local_bytes,
                    "kind": s.kind, "setting": s.setting,
                });
                if let Some(p) = s.percent {
                    v["percent"] = p.into();
                }
                if let Some(t) = s.mtime {
                    v["mtime"] = t.into();
                }
                println!("{v}");
            }
        } else {
            let style = tree::Style::new(
                std::io::stdout().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            );
            let depth = depth.unwrap_or(if paths.is_empty() { 0 } else { 1 });
            if !rows.is_empty() {
                println!("{}", tree::header(style));
            }
            for s in rows {
                let name = home_relative(&s.path);
                let node = self.tree_below(&mut c, s, depth, limit)?;
                for l in tree::lines(&node, &name, style) {
                    println!("{l}");
                }
            }
        }
        if code != 0 {
            return Err(Fail(code, anyhow!("")));
        }
        Ok(())
    }

    /// `s` and, for a folder, its first `limit` entries `depth` levels down (a page each).
    fn tree_below(&self, c: &mut Client, s: PathStatus, depth: u32, limit: u32) -> Res<tree::Node> {
        let mut node = tree::Node {
            status: s,
            children: Vec::new(),
            more: 0,
        };
        if depth == 0 || node.status.kind != skyfill::model::Kind::Dir {
            return Ok(node);
        }
        let page = c.list_page(&node.status.path, 0, limit.min(MAX_PAGE))?;
        node.more = page.total.saturating_sub(page.entries.len() as u64);
        for e in page.entries {
            node.children.push(self.tree_below(c, e, depth - 1, limit)?);
        }
        Ok(node)
    }

    fn roots(&self) -> Res<Vec<RootInfo>> {
        Ok(self.connect()?.roots()?)
    }

    fn login(&self, local: Option<&Path>, secret_stdin: bool, keyring_only: bool) -> Res {
        let roots = self.roots()?;
        let mut c = self.connect()?;
        match local {
            Some(l) => {
                let l = abs(l)?;
                let r = roots
                    .iter()
                    .find(|r| r.local == l.trim_end_matches('/'))
                    .ok_or_else(|| anyhow!(t!("{path} is not one of your sync roots", path = l)))?;
                // Before the prompt, so the user can stop before typing the password.
                if let Some(w) = plaintext_secret_warning(&r.remote) {
                    eprintln!("{}", t!("warning: {warning}", warning = w));
                }
                let secret = if secret_stdin {
                    read_secret_stdin()?
                } else if std::io::stdin().is_terminal() {
                    rpassword::prompt_password(t!(
                        "Password (or ACCESS_KEY:SECRET_KEY) for {account}: ",
                        account = credentials::account(&spec_of(r))
                    ))
                    .context(t!("reading the secret"))?
                } else {
                    return Err(anyhow!(t!(
                        "no terminal to ask for the secret; use --secret-stdin"
                    ))
                    .into());
                };
                c.login(&r.local, &secret, !keyring_only)?;
                match credentials::store(&spec_of(r), &secret) {
                    Ok(()) => println!(
                        "{}",
                        t!("signed in to {remote}; secret stored in your keyring", remote = r.remote)
                    ),
                    Err(e) if keyring_only => println!(
                        "{}",
                        t!(
                            "signed in to {remote}; the keyring is not available ({error}), so the secret is only kept until the daemon restarts",
                            remote = r.remote,
                            error = e
                        )
                    ),
                    Err(e) => println!(
                        "{}",
                        t!(
                            "signed in to {remote}; the keyring is not available ({error}), so the secret is only kept by the daemon",
                            remote = r.remote,
                            error = e
                        )
                    ),
                }
                Ok(())
            }
            None => {
                let mut n = 0;
                let mut code = 0;
                for r in roots.iter().filter(|r| !r.signed_in || !r.secret_persisted) {
                    match credentials::load(&spec_of(r)) {
                        Ok(Some(secret)) => {
                            if let Some(w) = plaintext_secret_warning(&r.remote) {
                                eprintln!(
                                    "{}",
                                    t!("warning: {warning}", warning = format!("{}: {w}", r.local))
                                );
                            }
                            match c.login(&r.local, &secret, r.secret_persisted) {
                                Ok(_) => {
                                    n += 1;
                                    println!("{}", t!("signed in: {root}", root = r.local));
                                }
                                Err(e) => {
                                    eprintln!("skyfill: {}: {e}", r.local);
                                    code = 1;
                                }
                            }
                        }
                        Ok(None) if !r.signed_in => {
                            eprintln!(
                                "skyfill: {}",
                                t!(
                                    "{root}: no secret in your keyring; run `skyfill login {root}`",
                                    root = r.local
                                )
                            );
                            code = 1;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            eprintln!("skyfill: {}: {e}", r.local);
                            code = 1;
                        }
                    }
                }
                if n == 0 && code == 0 {
                    println!("{}", t!("every root is signed in"));
                }
                if code != 0 {
                    return Err(Fail(code, anyhow!("")));
                }
                Ok(())
            }
        }
    }

    fn doctor(&self) -> Res {
        let mut bad = false;
        let mut line = |level: &str, what: &str, fix: &str| {
            if self.json {
                println!(
                    "{}",
                    serde_json::json!({"level": level, "what": what, "fix": fix})
                );
            } else if fix.is_empty() {
                println!("[{level:>4}] {what}");
            } else {
                println!("[{level:>4}] {what}\n       -> {fix}");
            }
            bad |= level == "fail";
        };
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut it = release.split(|c: char| !c.is_ascii_digit());
        let (maj, min) = (
            it.next().and_then(|x| x.parse::<u32>().ok()).unwrap_or(0),
            it.next().and_then(|x| x.parse::<u32>().ok()).unwrap_or(0),
        );
        if (maj, min) >= (6, 14) {
            line(
                "ok",
                &t!(
                    "kernel {release} has fanotify pre-content events",
                    release = release
                ),
                "",
            );
        } else {
            line(
                "fail",
                &t!(
                    "kernel {release} is older than 6.14: no pre-content events",
                    release = release
                ),
                &t!("upgrade to Linux 6.14 or newer"),
            );
        }
        let mut c = match Client::connect(&self.socket, "skyfill-doctor") {
            Ok(c) => c,
            Err(e) => {
                line(
                    "fail",
                    &t!("daemon not reachable: {error}", error = e),
                    &t!("start it: `systemctl start skyfilld` (packaged) or `sudo skyfilld` (from source)"),
                );
                return Err(Fail(1, anyhow!("")));
            }
        };
        line(
            "ok",
            &t!(
                "daemon reachable at {socket} ({daemon})",
                socket = self.socket.display(),
                daemon = c.hello.daemon
            ),
            "",
        );
        let d = c.doctor()?;
        for k in &d.checks {
            line(k.level.as_str(), &k.what, &k.fix);
        }
        if let Ok(roots) = self.roots() {
            for r in roots
                .iter()
                .filter(|r| r.user.is_some() || r.remote.starts_with("s3:"))
            {
                match credentials::load(&spec_of(r)) {
                    Ok(Some(_)) => line(
                        "ok",
                        &t!("{root}: secret in your keyring", root = r.local),
                        "",
                    ),
                    Ok(None) if r.secret_persisted => {}
                    Ok(None) => line(
                        "warn",
                        &t!("{root}: no secret in your keyring", root = r.local),
                        &t!("run `skyfill login {root}`", root = r.local),
                    ),
                    Err(e) => line(
                        "warn",
                        &t!("keyring not available: {error}", error = e),
                        &t!("start a Secret Service (GNOME Keyring, KWallet) in your session"),
                    ),
                }
            }
        }
        if bad {
            return Err(Fail(1, anyhow!("")));
        }
        Ok(())
    }

    fn config(&self, action: Option<ConfigCmd>) -> Res {
        let mut c = self.connect()?;
        let set = |c: &mut Client, key: &str, value: serde_json::Value, local: Option<String>| {
            c.config_set(key, value, local.as_deref())
        };
        let r = match action {
            None | Some(ConfigCmd::Get) => c.config_get()?,
            Some(ConfigCmd::Set { key, value, root }) => {
                let (k, v) =
                    skyfill::ipc::client::setting_value(&key, &value).map_err(|e| anyhow!(e))?;
                let local = root.as_deref().map(abs).transpose()?;
                set(&mut c, &k, v, local)?
            }
            Some(ConfigCmd::Block { program }) | Some(ConfigCmd::Unblock { program })
                if program.contains('/') =>
            {
                return Err(anyhow!(t!("give a program name, not a path")).into())
            }
            Some(cmd @ (ConfigCmd::Block { .. } | ConfigCmd::Unblock { .. })) => {
                let cur = c.config_get()?;
                let mut list = cur.settings.never_download;
                match cmd {
                    ConfigCmd::Block { program } => {
                        if !list.contains(&program) {
                            list.push(program)
                        }
                    }
                    ConfigCmd::Unblock { program } => list.retain(|x| *x != program),
                    _ => unreachable!(),
                }
                set(&mut c, "never_download", serde_json::json!(list), None)?
            }
        };
        if self.json {
            println!("{}", Self::line(&r));
            return Ok(());
        }
        let s = &r.settings;
        let rate = |n: u64| {
            if n == 0 {
                t!("unlimited")
            } else {
                format!("{}/s", human(n))
            }
        };
        println!("poll-interval    {} s", s.poll_interval_secs);
        println!("download-limit   {}", rate(s.download_limit));
        println!("upload-limit     {}", rate(s.upload_limit));
        println!("never-download   {}", s.never_download.join(", "));
        println!(
            "  {}",
            t!(
                "(and for everyone: {programs})",
                programs = r.system_never_download.join(", ")
            )
        );
        for root in &r.roots {
            let b = root.budget.map_or(t!("none"), budget_text);
            println!("budget           {} ({})", b, root.local);
        }
        Ok(())
    }

    fn run(&self, cmd: Cmd) -> Res {
        match cmd {
            Cmd::AddRoot {
                local,
                at,
                secret_stdin,
                keyring_only,
                no_keyring,
            } => {
                let spec = at.spec()?;
                let secret = if secret_stdin {
                    let s = read_secret_stdin()?;
                    if !no_keyring {
                        if let Err(e) = credentials::store(&spec, &s) {
                            eprintln!(
                                "skyfill: {}",
                                t!("not stored in your keyring: {error}", error = e)
                            );
                            if keyring_only {
                                return Err(
                                    anyhow!(t!("--keyring-only needs a working keyring")).into()
                                );
                            }
                        }
                    }
                    Some(s)
                } else if no_keyring || spec.url.starts_with("file:") {
                    None
                } else {
                    credentials::load(&spec).unwrap_or_else(|e| {
                        eprintln!(
                            "skyfill: {}",
                            t!(
                                "keyring not available ({error}); adding without a secret",
                                error = e
                            )
                        );
                        None
                    })
                };
                if secret.is_some() {
                    if let Some(w) = plaintext_secret_warning(&spec.url) {
                        eprintln!("{}", t!("warning: {warning}", warning = w));
                    }
                }
                let mut c = self.connect()?;
                let r: AddRootResult = c.request(RequestBody::AddRoot {
                    local: abs(&local)?,
                    remote: spec,
                    secret,
                    persist_secret: !keyring_only,
                })?;
                if self.json {
                    println!("{}", Self::line(&r));
                } else {
                    let mut said = t!(
                        "added {path}: {files} and {folders}, online-only, in {seconds} s",
                        path = local.display(),
                        files = tn!("{n} file", "{n} files", r.files),
                        folders = tn!("{n} folder", "{n} folders", r.dirs),
                        seconds = format!("{:.2}", r.seconds)
                    );
                    if r.rejected > 0 {
                        said = format!(
                            "{said} {}",
                            tn!(
                                "({n} remote name refused as unsafe; see the daemon log)",
                                "({n} remote names refused as unsafe; see the daemon log)",
                                r.rejected
                            )
                        );
                    }
                    println!("{said}");
                }
                Ok(())
            }
            Cmd::RemoveRoot {
                local,
                keep_local,
                download,
            } => {
                let mode = if download {
                    RemoveMode::Download
                } else if keep_local {
                    RemoveMode::KeepLocal
                } else {
                    RemoveMode::Refuse
                };
                let mut c = self.connect()?;
                let r: RemoveResult = self.call_job(
                    &mut c,
                    RequestBody::RemoveRoot {
                        local: abs(&local)?,
                        mode,
                    },
                )?;
                if self.json {
                    println!("{}", Self::line(&r));
                } else {
                    println!(
                        "{}",
                        t!(
                            "removed the sync root {path}: {kept} kept as ordinary files, {removed} removed",
                            path = local.display(),
                            kept = tn!("{n} file", "{n} files", r.kept),
                            removed = tn!("{n} online-only file", "{n} online-only files", r.removed)
                        )
                    );
                    for u in &r.unsynced_kept {
                        println!("  {}", t!("kept, not on the server: {path}", path = u));
                    }
                }
                Ok(())
            }
            Cmd::Roots => {
                let roots = self.roots()?;
                for r in &roots {
                    if self.json {
                        println!("{}", serde_json::to_string(r).unwrap_or_default());
                    } else {
                        let mut flags = Vec::new();
                        if r.paused {
                            flags.push(t!("paused"));
                        }
                        if !r.signed_in {
                            flags.push(t!("needs sign-in"));
                        }
                        if let Some(e) = &r.last_error {
                            flags.push(t!("error: {error}", error = e));
                        }
                        println!(
                            "{}  <->  {}{}",
                            r.local,
                            r.remote,
                            if flags.is_empty() {
                                String::new()
                            } else {
                                format!("  [{}]", flags.join("; "))
                            }
                        );
                    }
                }
                if roots.is_empty() && !self.json {
                    println!(
                        "{}",
                        t!("no sync roots yet: add one with `skyfill add-root`")
                    );
                }
                Ok(())
            }
            Cmd::Status {
                paths,
                depth,
                limit,
            } => self.status(&paths, depth, limit),
            Cmd::Du { paths, top } => self.du(&paths, top),
            Cmd::Pin { recursive, paths } => {
                self.batch(&paths, Verb::Pinned, |path| RequestBody::Pin {
                    path,
                    setting: PinSetting::Pinned,
                    recursive,
                })
            }
            Cmd::Unpin { recursive, paths } => {
                self.batch(&paths, Verb::Unpinned, |path| RequestBody::Pin {
                    path,
                    setting: PinSetting::Inherit,
                    recursive,
                })
            }
            Cmd::OnlineOnly { recursive, paths } => {
                self.batch(&paths, Verb::OnlineOnly, |path| RequestBody::Pin {
                    path,
                    setting: PinSetting::OnlineOnly,
                    recursive,
                })
            }
            Cmd::Free { recursive, paths } => self.batch(&paths, Verb::Freed, |path| {
                RequestBody::Free { path, recursive }
            }),
            Cmd::Hydrate { recursive, paths } => self.batch(&paths, Verb::Downloaded, |path| {
                RequestBody::Hydrate { path, recursive }
            }),
            Cmd::Login {
                local,
                secret_stdin,
                keyring_only,
            } => self.login(local.as_deref(), secret_stdin, keyring_only),
            Cmd::Pause { local } => {
                let local = local.as_deref().map(abs).transpose()?;
                let v = self.connect()?.pause(local.as_deref())?;
                self.print_paused(&v, true)
            }
            Cmd::Resume { local } => {
                let local = local.as_deref().map(abs).transpose()?;
                let v = self.connect()?.resume(local.as_deref())?;
                self.print_paused(&v, false)
            }
            Cmd::Sync { path } => {
                let mut c = self.connect()?;
                let r: SyncResult = self.call_job(
                    &mut c,
                    RequestBody::Sync {
                        path: path.as_deref().map(abs).transpose()?,
                    },
                )?;
                if self.json {
                    println!("{}", Self::line(&r));
                } else {
                    println!(
                        "{}",
                        t!(
                            "synced {roots}: {uploaded} uploaded, {added} new from the server, {downloaded} downloaded for pinned folders, {changed} renamed, deleted or refreshed, {conflicts} kept as copies",
                            roots = tn!("{n} root", "{n} roots", r.roots),
                            uploaded = r.uploaded,
                            added = r.added,
                            downloaded = r.downloaded,
                            changed = r.changed,
                            conflicts = tn!("{n} conflict", "{n} conflicts", r.conflicts)
                        )
                    );
                    if r.waiting > 0 {
                        println!(
                            "{}",
                            tn!(
                                "{n} file still being written: it syncs once it settles",
                                "{n} files still being written: they sync once they settle",
                                r.waiting
                            )
                        );
                    }
                    for e in &r.errors {
                        eprintln!("  {}: {}", e.path, e.reason);
                    }
                }
                if !r.errors.is_empty() {
                    return Err(Fail(1, anyhow!("")));
                }
                Ok(())
            }
            Cmd::Config { action } => self.config(action),
            Cmd::Doctor => self.doctor(),
            Cmd::Stats => {
                let v = self.connect()?.stats()?;
                self.print(&v);
                Ok(())
            }
            Cmd::Completions { shell } => {
                clap_complete::generate(
                    shell,
                    &mut Args::command(),
                    "skyfill",
                    &mut std::io::stdout(),
                );
                Ok(())
            }
            Cmd::Man => {
                clap_mangen::Man::new(Args::command())
                    .render(&mut std::io::stdout())
                    .map_err(|e| anyhow!("{e}"))?;
                Ok(())
            }
            Cmd::ListRemote { at } => {
                let spec = at.spec()?;
                let secret = std::env::var("SKYFILL_SECRET").ok();
                let r = skyfill::remote::open_remote(
                    &spec,
                    secret.as_deref(),
                    skyfill::remote::http::HttpConfig::default(),
                    None,
                    skyfill::asuser::UserCreds::current(),
                )
                .map_err(|e| anyhow!("{e}"))?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| anyhow!("{e}"))?;
                let t = std::time::Instant::now();
                let mut files = 0u64;
                let stats = rt
                    .block_on(r.walk(&skyfill::model::RelPath::root(), &mut |e| {
                        if e.kind != skyfill::model::Kind::Dir {
                            files += 1;
                        }
                        Ok(())
                    }))
                    .map_err(|e| anyhow!("{e}"))?;
                println!(
                    "{{\"entries\":{},\"files\":{files},\"seconds\":{:.6}}}",
                    stats.entries,
                    t.elapsed().as_secs_f64()
                );
                Ok(())
            }
            Cmd::Call { request } => {
                let body: RequestBody =
                    serde_json::from_str(&request).map_err(|e| anyhow!("not a request: {e}"))?;
                let v = self.connect()?.call(body)?;
                println!("{v}");
                Ok(())
            }
        }
    }

    fn print_paused(&self, roots: &[RootInfo], paused: bool) -> Res {
        if self.json {
            println!("{}", Self::line(&roots));
            return Ok(());
        }
        for r in roots {
            if paused {
                println!("{}", t!("paused: {root}", root = r.local));
            } else {
                println!("{}", t!("resumed: {root}", root = r.local));
            }
        }
        Ok(())
    }
}

fn spec_of(r: &RootInfo) -> RemoteSpec {
    RemoteSpec {
        url: r.remote.clone(),
        user: r.user.clone(),
        ..Default::default()
    }
}

/// clap's own words: the help's headings, the built-in arguments' help and the usage errors
/// this CLI answers itself (in `cat`'s language, through [`clap_error`]). Their English text is
/// the message id, listed in `po/cli-help.pot` with the help texts.
mod clap_words {
    pub const USAGE: &str = "Usage:";
    pub const COMMANDS: &str = "Commands";
    pub const ARGUMENTS: &str = "Arguments";
    pub const OPTIONS: &str = "Options";
    pub const ERROR: &str = "error:";
    pub const TIP: &str = "tip:";
    pub const MORE: &str = "For more information, try '--help'.";
    pub const UNKNOWN_COMMAND: &str = "unrecognized subcommand '{name}'";
    pub const UNKNOWN_ARGUMENT: &str = "unexpected argument '{name}' found";
    pub const SIMILAR_COMMAND: &str = "a similar subcommand exists: '{name}'";
    pub const SIMILAR_ARGUMENT: &str = "a similar argument exists: '{name}'";
    pub const MISSING: &str = "the following required arguments were not provided:";
    pub const INVALID_VALUE: &str = "invalid value '{value}' for '{arg}'";
    pub const POSSIBLE: &str = "possible values: {values}";
    pub const NO_VALUE: &str = "a value is required for '{arg}' but none was supplied";
    pub const CONFLICT: &str = "the argument '{arg}' cannot be used with '{other}'";
    /// Every one, for `po/cli-help.pot`.
    #[cfg(test)]
    pub const ALL: [&str; 16] = [
        USAGE,
        COMMANDS,
        ARGUMENTS,
        OPTIONS,
        ERROR,
        TIP,
        MORE,
        UNKNOWN_COMMAND,
        UNKNOWN_ARGUMENT,
        SIMILAR_COMMAND,
        SIMILAR_ARGUMENT,
        MISSING,
        INVALID_VALUE,
        POSSIBLE,
        NO_VALUE,
        CONFLICT,
    ];
}

/// The command line in `cat`'s language: every text of the help (about, long about, each
/// argument's help, clap's own `--help`, `--version` and `help`), its headings and the usage
/// line's title, down every subcommand. The English text is the message id (`po/cli-help.pot`
/// lists them). The command comes back built.
fn localized(cmd: clap::Command, cat: &skyfill::i18n::Catalogue) -> clap::Command {
    let mut cmd = cmd;
    cmd.build();
    let usage = cat.tr(clap_words::USAGE).to_string();
    localized_built(cmd, cat, &usage)
}

fn localized_built(
    cmd: clap::Command,
    cat: &skyfill::i18n::Catalogue,
    usage: &str,
) -> clap::Command {
    let tr = |s: Option<&clap::builder::StyledStr>| s.map(|s| cat.tr(&s.to_string()).to_string());
    let about = tr(cmd.get_about());
    let long = tr(cmd.get_long_about());
    // The help's sections, as clap lays them out (commands, arguments, options), under
    // translated titles: clap's own titles cannot be translated, its template can.
    let styles = cmd.get_styles();
    let (title, heading) = (*styles.get_usage(), *styles.get_header());
    let mut template =
        format!("{{before-help}}{{about-with-newline}}\n{title}{usage}{title:#} {{usage}}");
    let mut section = |shown: bool, name: &'static str, tag: &str| {
        if shown {
            let name = cat.tr(name);
            template.push_str(&format!("\n\n{heading}{name}:{heading:#}\n{{{tag}}}"));
        }
    };
    section(
        cmd.get_subcommands().any(|s| !s.is_hide_set()),
        clap_words::COMMANDS,
        "subcommands",
    );
    section(
        cmd.get_positionals().any(|a| !a.is_hide_set()),
        clap_words::ARGUMENTS,
        "positionals",
    );
    section(
        cmd.get_opts().any(|a| !a.is_hide_set())
            || cmd
                .get_arguments()
                .any(|a| !a.is_positional() && !a.is_hide_set()),
        clap_words::OPTIONS,
        "options",
    );
    template.push_str("{after-help}");
    let mut cmd = cmd.help_template(template).mut_args(|a| {
        let help = tr(a.get_help());
        let long = tr(a.get_long_help());
        let a = match help {
            Some(h) => a.help(h),
            None => a,
        };
        match long {
            Some(h) => a.long_help(h),
            None => a,
        }
    });
    if let Some(a) = about {
        cmd = cmd.about(a);
    }
    if let Some(l) = long {
        cmd = cmd.long_about(l);
    }
    cmd.mut_subcommands(|s| localized_built(s, cat, usage))
}

/// A usage error in `cat`'s language, as clap would print it (`None`: one this CLI leaves to
/// clap, in English, or not an error at all, like `--help`).
fn clap_error(e: &clap::Error, cat: &skyfill::i18n::Catalogue) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    // English is clap's own (with its colours and every tip); so is anything carrying a tip
    // this function does not say (a similar value, `--` before a value that looks like a flag).
    let tips = match e.get(ContextKind::Suggested) {
        Some(ContextValue::StyledStrs(v)) => !v.is_empty(),
        Some(_) => true,
        None => false,
    };
    if cat.lang == "en" || tips || e.get(ContextKind::SuggestedValue).is_some() {
        return None;
    }
    let fill = |id: &'static str, args: &[(&str, &str)]| {
        let args: Vec<(&str, &dyn std::fmt::Display)> = args
            .iter()
            .map(|(k, v)| (*k, v as &dyn std::fmt::Display))
            .collect();
        skyfill::i18n::fill(cat.tr(id), &args)
    };
    let text = |k: ContextKind| match e.get(k) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        Some(ContextValue::Strings(v)) => v.first().cloned(),
        Some(ContextValue::StyledStr(s)) => Some(s.to_string()),
        _ => None,
    };
    let (msg, tip) = match e.kind() {
        ErrorKind::InvalidSubcommand => {
            let name = text(ContextKind::InvalidSubcommand)?;
            let tip = text(ContextKind::SuggestedSubcommand)
                .map(|s| fill(clap_words::SIMILAR_COMMAND, &[("name", &s)]));
            (fill(clap_words::UNKNOWN_COMMAND, &[("name", &name)]), tip)
        }
        ErrorKind::UnknownArgument => {
            let name = text(ContextKind::InvalidArg)?;
            let tip = text(ContextKind::SuggestedArg)
                .map(|s| fill(clap_words::SIMILAR_ARGUMENT, &[("name", &s)]));
            (fill(clap_words::UNKNOWN_ARGUMENT, &[("name", &name)]), tip)
        }
        ErrorKind::MissingRequiredArgument => {
            let Some(ContextValue::Strings(v)) = e.get(ContextKind::InvalidArg) else {
                return None;
            };
            let args: String = v.iter().map(|a| format!("\n  {a}")).collect();
            (format!("{}{args}", cat.tr(clap_words::MISSING)), None)
        }
        ErrorKind::InvalidValue => {
            let arg = text(ContextKind::InvalidArg)?;
            let value = text(ContextKind::InvalidValue)?;
            let msg = if value.is_empty() {
                fill(clap_words::NO_VALUE, &[("arg", &arg)])
            } else {
                fill(
                    clap_words::INVALID_VALUE,
                    &[("value", &value), ("arg", &arg)],
                )
            };
            // As clap says them: `  [possible values: a, b]` under the message.
            let msg = match e.get(ContextKind::ValidValue) {
                Some(ContextValue::Strings(v)) if !v.is_empty() => format!(
                    "{msg}\n  [{}]",
                    fill(clap_words::POSSIBLE, &[("values", &v.join(", "))])
                ),
                _ => msg,
            };
            (msg, None)
        }
        ErrorKind::ArgumentConflict => {
            let arg = text(ContextKind::InvalidArg)?;
            // One other argument, not the same one given twice (clap says that its own way).
            let other = match e.get(ContextKind::PriorArg) {
                Some(ContextValue::String(s)) if *s != arg => s.clone(),
                _ => return None,
            };
            (
                fill(clap_words::CONFLICT, &[("arg", &arg), ("other", &other)]),
                None,
            )
        }
        _ => return None,
    };
    let mut out = format!("{} {msg}\n", cat.tr(clap_words::ERROR));
    if let Some(t) = tip {
        out.push_str(&format!("\n  {} {t}\n", cat.tr(clap_words::TIP)));
    }
    if let Some(u) = text(ContextKind::Usage) {
        let u = match u.strip_prefix("Usage:") {
            Some(rest) => format!("{}{rest}", cat.tr(clap_words::USAGE)),
            None => u,
        };
        out.push_str(&format!("\n{u}\n"));
    }
    out.push_str(&format!("\n{}\n", cat.tr(clap_words::MORE)));
    Some(out)
}

/// Ends the program on a command-line error: usage errors in the desktop's language, help and
/// version as clap prints them.
fn exit_on(e: clap::Error) -> ! {
    if let Some(text) = clap_error(&e, skyfill::i18n::current()) {
        eprint!("{text}");
        std::process::exit(e.exit_code());
    }
    e.exit()
}

/// Each help text of `cmd` and its subcommands, in order, once.
#[cfg(test)]
fn help_texts(cmd: &clap::Command, out: &mut Vec<String>) {
    let mut add = |s: Option<&clap::builder::StyledStr>| {
        if let Some(s) = s.map(|s| s.to_string()) {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    };
    add(cmd.get_about());
    add(cmd.get_long_about());
    for a in cmd.get_arguments() {
        add(a.get_help());
        add(a.get_long_help());
    }
    for s in cmd.get_subcommands() {
        help_texts(s, out);
    }
}

fn main() -> ExitCode {
    let mut matches = localized(Args::command(), skyfill::i18n::current())
        .try_get_matches()
        .unwrap_or_else(|e| exit_on(e));
    let args = match <Args as clap::FromArgMatches>::from_arg_matches_mut(&mut matches) {
        Ok(a) => a,
        Err(e) => exit_on(e),
    };
    let cli = Cli {
        socket: args.socket,
        json: args.json,
    };
    match cli.run(args.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(code, e)) => {
            let msg = plain(&format!("{e:#}"));
            if !msg.is_empty() {
                eprintln!("skyfill: {msg}");
            }
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add_root(remote: &str, extra: &[&str]) -> anyhow::Result<RemoteSpec> {
        let mut argv = vec!["skyfill", "add-root", "/tmp/cloud", remote];
        argv.extend_from_slice(extra);
        match Args::try_parse_from(argv).unwrap().cmd {
            Cmd::AddRoot { at, .. } => at.spec(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn messages_say_each_thing_once() {
        assert_eq!(tn!("{n} folder", "{n} folders", 1u64), "1 folder");
        assert_eq!(tn!("{n} folder", "{n} folders", 0u64), "0 folders");
        assert_eq!(Verb::Pinned.said("/c/x", 2), "pinned /c/x: 2 files");
        let e = anyhow!("/c/x: No such file or directory (os error 2)");
        assert_eq!(about("/c/x", &e), "/c/x: No such file or directory");
        let e = anyhow!("not in a sync root");
        assert_eq!(about("/c/x", &e), "/c/x: not in a sync root");
        assert_eq!(plain("a (os error x) b"), "a (os error x) b");
        let e: anyhow::Error = ClientError::Connect {
            path: "/run/s".into(),
            error: std::io::Error::from_raw_os_error(libc::ENOENT),
        }
        .into();
        let said = plain(&format!("{e:#}"));
        assert_eq!(
            said.matches("No such file or directory").count(),
            1,
            "{said}"
        );
        assert!(!said.contains("os error"), "{said}");
    }

    /// `po/cli-help.pot` lists every help text (clap takes them from the doc comments above),
    /// for `scripts/i18n` to merge into the catalogues; `SKYFILL_I18N_UPDATE=1` rewrites it.
    #[test]
    fn every_argument_says_what_it_is() {
        fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                if !a.is_hide_set() && a.get_help().is_none() {
                    out.push(format!("{path} {}", a.get_id()));
                }
            }
            for s in cmd.get_subcommands() {
                walk(s, &format!("{path} {}", s.get_name()), out);
            }
        }
        let mut cmd = Args::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "skyfill", &mut missing);
        assert!(
            missing.is_empty(),
            "arguments without a help text: {missing:#?}"
        );
    }

    #[test]
    fn help_texts_are_listed_for_translators() {
        let mut texts = Vec::new();
        let mut cmd = Args::command();
        cmd.build();
        help_texts(&cmd, &mut texts);
        for w in clap_words::ALL {
            if !texts.iter().any(|t| t == w) {
                texts.push(w.to_string());
            }
        }
        let esc = |s: &str| {
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        let mut pot = String::from(
            "# The skyfill CLI's help texts (from the clap doc comments of src/bin/skyfill.rs),\n\
             # written by its test help_texts_are_listed_for_translators; scripts/i18n merges them.\n",
        );
        for t in &texts {
            pot.push_str(&format!(
                "\n#: src/bin/skyfill.rs\nmsgid \"{}\"\nmsgstr \"\"\n",
                esc(t)
            ));
        }
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("po/cli-help.pot");
        if std::env::var_os("SKYFILL_I18N_UPDATE").is_some() {
            std::fs::write(&file, &pot).unwrap();
        }
        let have = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            have == pot,
            "po/cli-help.pot is out of date: run SKYFILL_I18N_UPDATE=1 cargo test --bin skyfill help_texts, then scripts/i18n update"
        );
        assert!(texts.len() > 40, "{} help texts", texts.len());
        // In German every help text is translated, and the help shows it.
        let de = skyfill::i18n::built_in("de");
        let missing: Vec<&String> = texts.iter().filter(|t| de.tr(t) == t.as_str()).collect();
        assert!(
            missing.is_empty(),
            "untranslated help texts in po/de.po: {missing:#?}"
        );
        let help = localized(Args::command(), &de)
            .find_subcommand_mut("pin")
            .unwrap()
            .render_help()
            .to_string();
        assert!(!help.contains("Always keep on this device"), "{help}");
        for english in ["Usage:", "Arguments:", "Options:", "Print help"] {
            assert!(!help.contains(english), "{english}: {help}");
        }
        // Usage errors too.
        let e = localized(Args::command(), &de)
            .try_get_matches_from(["skyfill", "pinn"])
            .unwrap_err();
        let text = clap_error(&e, &de).unwrap();
        assert!(text.contains("'pinn'") && text.contains("'pin'"), "{text}");
        for english in ["error:", "Usage:", "For more information", "unrecognized"] {
            assert!(!text.contains(english), "{english}: {text}");
        }
        let e = localized(Args::command(), &de)
            .try_get_matches_from(["skyfill", "pin"])
            .unwrap_err();
        assert!(clap_error(&e, &de).unwrap().contains("<PATHS>"));
        let e = localized(Args::command(), &de)
            .try_get_matches_from(["skyfill", "stats", "--bogus"])
            .unwrap_err();
        let text = clap_error(&e, &de).unwrap();
        assert!(text.contains("unerwartetes Argument '--bogus'"), "{text}");
        let e = localized(Args::command(), &de)
            .try_get_matches_from(["skyfill", "completions", "nope"])
            .unwrap_err();
        let text = clap_error(&e, &de).unwrap();
        assert!(
            text.contains("'nope'") && text.contains("[mögliche Werte: bash,"),
            "{text}"
        );
        // What this CLI does not say itself stays clap's: a flag given twice, and English.
        let e = localized(Args::command(), &de)
            .try_get_matches_from(["skyfill", "pin", "-r", "-r", "x"])
            .unwrap_err();
        assert!(clap_error(&e, &de).is_none(), "{e}");
        let en = skyfill::i18n::Catalogue::english();
        let e = localized(Args::command(), &en)
            .try_get_matches_from(["skyfill", "pinn"])
            .unwrap_err();
        assert!(clap_error(&e, &en).is_none());
    }

    #[test]
    fn passwords_in_remote_addresses_are_refused() {
        for url in [
            "dav://me:pw@host/remote.php/dav/files/me",
            "davs://me:pw@cloud.example.org/dav",
            "davs://me:@host/dav",
            "s3://AKID:SECRET@bucket/prefix",
            "https://me:p%40ss@host:8443/dav",
            "davs://me:pw@host",
        ] {
            let e = add_root(url, &[]).unwrap_err().to_string();
            assert!(e.contains("contains a password"), "{url}: {e}");
            assert!(e.contains("--secret-stdin"), "{url}: {e}");
            assert!(!e.contains("pw") && !e.contains("SECRET"), "echoes it: {e}");
        }
        let e = add_root(
            "s3://bucket/p",
            &["--endpoint", "https://AK:SK@s3.example.org"],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--endpoint address contains a password"), "{e}");
    }

    #[test]
    fn user_names_in_remote_addresses_are_allowed() {
        for url in [
            "davs://me@cloud.example.org/remote.php/dav/files/me",
            "dav://me@127.0.0.1:8080/dav",
            "davs://cloud.example.org/remote.php/dav/files/me@work/x:y",
            "s3://bucket/photos:2024@home",
            "file:///mnt/nas/share",
            "davs://host/a?x=b:c@d",
        ] {
            let s = add_root(url, &["--user", "me"]).unwrap();
            assert_eq!(s.url, url);
        }
        assert!(!url_has_password("not a url"));
    }

    #[test]
    fn plain_http_webdav_warns_that_the_password_goes_unencrypted() {
        let w = plaintext_secret_warning("dav://127.0.0.1:8080/dav").unwrap();
        assert!(
            w.starts_with("dav:// sends your password unencrypted (HTTP Basic)"),
            "{w}"
        );
        assert!(w.contains("use davs://") && !w.contains('\n'), "{w}");
        assert!(plaintext_secret_warning("DAV://host/x").is_some());
        assert!(plaintext_secret_warning("http://host/x")
            .unwrap()
            .contains("use https://"));
        for quiet in [
            "davs://host/dav",
            "https://host/dav",
            "s3://bucket/p",
            "file:///srv/x",
            "nonsense",
        ] {
            assert_eq!(plaintext_secret_warning(quiet), None, "{quiet}");
        }
    }

    #[test]
    fn a_silent_daemon_counts_as_unreachable() {
        let Fail(code, e) = Fail::from(ClientError::Timeout(std::time::Duration::from_secs(30)));
        assert_eq!(code, 3);
        assert!(e.to_string().contains("did not answer within 30 s"), "{e}");
    }
}
