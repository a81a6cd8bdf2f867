//! `skyfilld`: the Skyfill root daemon. By default it runs as the keeper (holds the fanotify
//! group and the socket, restarts the worker); `--worker` is how the keeper starts the worker.

use anyhow::Context;
use clap::Parser;
use skyfill::daemon::{run_keeper, run_worker, Options};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "skyfilld",
    version,
    about = "Skyfill daemon: files on demand via fanotify pre-content events"
)]
struct Args {
    /// Unix socket clients connect to.
    #[arg(
        long,
        default_value = "/run/skyfill/skyfill.sock",
        env = "SKYFILL_SOCKET"
    )]
    socket: PathBuf,
    /// Directory for the root registry, index, secrets and journals.
    #[arg(long, default_value = "/var/lib/skyfill", env = "SKYFILL_STATE_DIR")]
    state_dir: PathBuf,
    /// Run as a worker on descriptors passed by the keeper (internal).
    #[arg(long, hide = true)]
    worker: bool,
    /// Run a single worker process without a keeper (debugging only: a crash then lets
    /// readers see zeros).
    #[arg(long)]
    no_keeper: bool,
}

/// Logs to journald when systemd started us (it sets `JOURNAL_STREAM`), else to stderr.
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKYFILL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(j) = tracing_journald::layer() {
            tracing_subscriber::registry()
                .with(filter)
                .with(j.with_syslog_identifier("skyfilld".into()))
                .init();
            return;
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options ([`skyfill::daemon::memory::MALLOC_CONF`]), under the name it reads.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8; 60] = skyfill::daemon::memory::MALLOC_CONF;

fn main() -> anyhow::Result<()> {
    init_logging();
    let args = Args::parse();
    if !nix::unistd::Uid::effective().is_root() {
        anyhow::bail!("skyfilld must run as root (fanotify pre-content events need CAP_SYS_ADMIN)");
    }
    let opts = Options {
        socket: args.socket,
        state_dir: args.state_dir,
    };
    if args.worker || args.no_keeper {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()?;
        rt.block_on(run_worker(opts, args.no_keeper))
            .context("worker failed")
    } else {
        run_keeper(&opts).context("keeper failed")
    }
}
