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
        // glibc gives every thread that allocates its own arena, and each keeps what it freed:
        // a handful of busy threads would hold tens of MiB. Two arenas are plenty for this
        // daemon. Fixed thresholds: glibc otherwise raises its mmap threshold (up to 32 MiB)
        // each time a large block is freed, after which sled's buffers and a pass's large
        // vectors land in the arenas and stay there as holes; at 128 KiB they are mapped
        // apart and go back to the system when freed. Measured in doc/BENCHMARKS.md ("Where
        // the worker's memory goes"). Set before the runtime starts its threads, which take
        // their arenas as they first allocate.
        // SAFETY: mallopt while this process has one thread.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 10);
        }
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
