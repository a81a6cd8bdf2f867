//! `skyfill`: the command-line client. Every command is one request on the daemon socket.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use skyfill::ipc::client::Client;
use skyfill::ipc::proto::RequestBody;
use skyfill::remote::RemoteSpec;
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(
    name = "skyfill",
    version,
    about = "Skyfill: files on demand for Linux"
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
    /// Print raw JSON answers.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Bind an empty or new directory to a remote: dav://host[:port]/path, davs://host/path,
    /// s3://bucket[/prefix] or file:///path.
    AddRoot {
        local: PathBuf,
        remote: String,
        #[arg(long)]
        user: Option<String>,
        /// S3 endpoint URL (default: AWS for the region).
        #[arg(long)]
        endpoint: Option<String>,
        #[arg(long)]
        region: Option<String>,
        /// S3 path-style addressing (most self-hosted S3 servers).
        #[arg(long)]
        path_style: bool,
        /// Read the secret (password, or ACCESS_KEY:SECRET_KEY for S3) from standard input.
        #[arg(long)]
        secret_stdin: bool,
    },
    /// Your sync roots.
    Roots,
    /// State of a file or folder (all roots without a path).
    Status { path: Option<PathBuf> },
    /// Free up space: make local files online-only again.
    Free { path: PathBuf },
    /// Download now ("make available offline"); --pin keeps it local.
    Hydrate {
        path: PathBuf,
        #[arg(long)]
        pin: bool,
    },
    /// Transfer counters of the daemon.
    Stats,
}

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
        .context("path is not UTF-8")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let body = match args.cmd {
        Cmd::AddRoot {
            local,
            remote,
            user,
            endpoint,
            region,
            path_style,
            secret_stdin,
        } => {
            let secret = if secret_stdin {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                Some(s.trim_end_matches(['\n', '\r']).to_string())
            } else {
                None
            };
            RequestBody::AddRoot {
                local: abs(&local)?,
                remote: RemoteSpec {
                    url: remote,
                    user,
                    endpoint,
                    region,
                    path_style,
                },
                secret,
            }
        }
        Cmd::Roots => RequestBody::Roots,
        Cmd::Status { path } => RequestBody::Status {
            path: path.as_deref().map(abs).transpose()?,
        },
        Cmd::Free { path } => RequestBody::Free { path: abs(&path)? },
        Cmd::Hydrate { path, pin } => RequestBody::Hydrate {
            path: abs(&path)?,
            pin,
        },
        Cmd::Stats => RequestBody::Stats,
    };
    let mut c = Client::connect(&args.socket, "skyfill-cli")?;
    let v = match c.call(body) {
        Ok(v) => v,
        Err(e) => bail!("{e}"),
    };
    if args.json {
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(())
}
