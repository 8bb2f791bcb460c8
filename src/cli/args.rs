//! Command-line arguments (clap). These types stay in the binary: the
//! commands turn them into the library's plain configs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// intake: bring files from folders into a workspace, safely and fast.
#[derive(Debug, Parser)]
#[command(name = "intake", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// The workspace: a folder, or the address of a PostgreSQL one
    /// (postgresql://USER@HOST:PORT/DB?schema=S). `intake serve` takes it
    /// more than once, as NAME=DIR or DIR (served under the folder's name).
    #[arg(
        long,
        short = 'w',
        global = true,
        env = "INTAKE_WORKSPACE",
        value_name = "WORKSPACE",
        action = clap::ArgAction::Append
    )]
    pub workspace: Vec<PathBuf>,

    /// Print one JSON object per line instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Print only errors.
    #[arg(long, short = 'q', global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print more (every file; -vv adds debug logs). RUST_LOG overrides.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a workspace (does nothing to an existing one).
    Init {
        /// Let the folder's group read the new workspace (0750; default:
        /// its owner only, 0700).
        #[arg(long)]
        group: bool,
        /// For a PostgreSQL workspace (`--workspace postgresql://…`): where
        /// its large blobs live, `s3://BUCKET/PREFIX` or a folder every
        /// machine reaches. Recorded in the index; other commands need
        /// only the PostgreSQL address.
        #[arg(long, value_name = "LOCATION")]
        blobs: Option<String>,
    },
    /// Ingest files and folders once.
    Ingest(IngestArgs),
    /// Watch folders and ingest every file that appears or changes.
    Watch(WatchArgs),
    /// Create, list, show and close sessions.
    #[command(subcommand)]
    Session(SessionCmd),
    /// List and read what the workspace holds.
    #[command(subcommand)]
    Files(FilesCmd),
    /// Write the workspace (or its state at an instant) as a plain folder tree.
    Export(ExportArgs),
    /// Re-hash every blob and check every reference; exit 1 on any defect.
    Verify,
    /// Copy a whole workspace (names, history, sessions, blobs) into another.
    ///
    /// For example from a folder into PostgreSQL + S3, or back. A second
    /// run finishes an interrupted copy; the target is verified at the end.
    Copy {
        /// The workspace to copy (a folder or a postgresql:// address).
        #[arg(long, value_name = "WORKSPACE")]
        from: PathBuf,
        /// The target: a folder (created if missing), or a PostgreSQL
        /// workspace made with `intake init --blobs`.
        #[arg(long, value_name = "WORKSPACE")]
        to: PathBuf,
    },
    /// Remove old versions and unreferenced blobs past their retention.
    Gc {
        /// Keep replaced versions and unreferenced blobs younger than this.
        #[arg(long, default_value = "7d", value_name = "DURATION")]
        retention: String,
        /// Never remove a blob file written more recently than this (a
        /// running ingest may be about to refer to it).
        #[arg(long, default_value = "1h", value_name = "DURATION")]
        grace: String,
    },
    /// Serve the deepset upload-session API over HTTP, so that the
    /// deepset-cloud SDK and CLI upload into workspaces.
    Serve(ServeArgs),
    /// Create, list and revoke the API keys of `intake serve`.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Print a shell completion script (see the README's install step).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), generated from these definitions.
    Man,
}

/// Which files to take and how to name them.
#[derive(Debug, Args, Clone, Default)]
pub struct SelectArgs {
    /// Name every file by its basename only.
    #[arg(long)]
    pub flatten: bool,
    /// Put PREFIX/ in front of every name.
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// Only these extensions (comma-separated, any case): --ext txt,pdf
    #[arg(long, value_delimiter = ',', value_name = "EXT")]
    pub ext: Vec<String>,
    /// Only files matching this glob (repeatable). Without '/', matches the
    /// file name; with '/', the path under the source folder.
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Leave out files and folders matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Take hidden files and folders too.
    #[arg(long)]
    pub hidden: bool,
    /// Descend at most this many levels (1: only the folder's own files).
    #[arg(long, value_name = "N")]
    pub max_depth: Option<usize>,
    /// Follow symbolic links (loops are reported, not followed).
    #[arg(long, short = 'L')]
    pub follow_links: bool,
}

/// Which session to work in.
#[derive(Debug, Args, Clone, Default)]
pub struct SessionArgs {
    /// Use this open session (and leave it open) instead of creating one.
    #[arg(long, value_name = "ID", conflicts_with_all = ["write_mode", "ttl", "no_expiry"])]
    pub session: Option<String>,
    /// What to do with a name already in the workspace.
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    pub write_mode: Option<intake::WriteMode>,
    /// Lifetime of a new session (90s, 15m, 24h, 7d; default 24h).
    #[arg(long, value_name = "DURATION", conflicts_with = "no_expiry")]
    pub ttl: Option<String>,
    /// A new session that never expires.
    #[arg(long)]
    pub no_expiry: bool,
    /// Who creates the session: "Given Family" (default: the OS user).
    #[arg(long, env = "INTAKE_USER", value_name = "NAME")]
    pub user: Option<String>,
}

fn parse_mode(s: &str) -> Result<intake::WriteMode, String> {
    s.parse()
        .map_err(|e: intake::session::UnknownWriteMode| e.to_string())
}

/// `intake ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Files and folders to ingest, in order.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub session: SessionArgs,
    /// Re-read and re-hash every file instead of trusting size and mtime.
    #[arg(long, short = 'c')]
    pub checksum: bool,
    /// Print the decision each file would get; change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Reader threads (default: twice the cores).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
}

/// `intake watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Folders to watch.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub session: SessionArgs,
    /// How long a file must stay unchanged before it is read when no close
    /// event tells (default 500ms).
    #[arg(long, value_name = "DURATION")]
    pub settle: Option<String>,
    /// Poll every INTERVAL instead of using inotify (network filesystems).
    #[arg(long, value_name = "INTERVAL")]
    pub poll: Option<String>,
    /// When the session expires, exit with code 3 instead of opening a new one.
    #[arg(long)]
    pub no_rotate: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// A TOML file with any of these options (the command line wins).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// After SIGINT/SIGTERM, how long the files in flight may take before
    /// the watcher exits anyway (default 30s).
    #[arg(long, value_name = "DURATION")]
    pub stop_timeout: Option<String>,
    /// Re-read and re-hash every file instead of trusting size and mtime.
    #[arg(long, short = 'c')]
    pub checksum: bool,
    /// Delete from the workspace what a file removed from a watched folder
    /// (and not back within the settle window) was ingested as.
    #[arg(long)]
    pub delete: bool,
    /// Reader threads (default: twice the cores).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
}

/// `intake export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The folder to write into (created if missing).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Only names starting with this.
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// The workspace as it was at this instant (RFC 3339, or a duration
    /// meaning that long ago: 2h, 7d).
    #[arg(long, value_name = "TIMESTAMP")]
    pub at: Option<String>,
    /// Write each name's metadata as an X.meta.json sidecar beside it.
    #[arg(long)]
    pub with_meta: bool,
    /// Remove files an earlier export wrote whose names left the workspace
    /// (never anything else).
    #[arg(long)]
    pub delete: bool,
}

/// The session a change is written in.
#[derive(Debug, Args, Clone, Default)]
pub struct ChangeSessionArgs {
    /// Use this open session (and leave it open) instead of creating one.
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
    /// Who creates the session: "Given Family" (default: the OS user).
    #[arg(long, env = "INTAKE_USER", value_name = "NAME")]
    pub user: Option<String>,
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `intake session …`.
#[derive(Debug, Subcommand)]
pub enum SessionCmd {
    /// Create a session and print it.
    Create {
        /// What to do with a name already in the workspace (default keep).
        #[arg(long, value_name = "MODE", value_parser = parse_mode)]
        write_mode: Option<intake::WriteMode>,
        /// Lifetime (default 24h).
        #[arg(long, value_name = "DURATION", conflicts_with = "no_expiry")]
        ttl: Option<String>,
        /// Never expires.
        #[arg(long)]
        no_expiry: bool,
        /// Who creates it: "Given Family" (default: the OS user).
        #[arg(long, env = "INTAKE_USER", value_name = "NAME")]
        user: Option<String>,
    },
    /// List sessions.
    List,
    /// Show a session with its status and counts.
    Show {
        /// The session id.
        id: String,
        /// Also list every file's outcome.
        #[arg(long)]
        files: bool,
    },
    /// Close a session: it refuses every further file.
    Close {
        /// The session id.
        id: String,
    },
    /// Undo what a closed session changed, in a new session.
    Revert {
        /// The session id.
        id: String,
        /// Print what would be done; change nothing.
        #[arg(long, short = 'n')]
        dry_run: bool,
        /// Revert names that a later session changed since, too.
        #[arg(long)]
        force: bool,
        /// Who creates the new session: "Given Family" (default: the OS user).
        #[arg(long, env = "INTAKE_USER", value_name = "NAME")]
        user: Option<String>,
    },
}

/// `intake files …`.
#[derive(Debug, Subcommand)]
pub enum FilesCmd {
    /// List names (optionally only those under a prefix).
    List {
        /// Only names starting with this.
        prefix: Option<String>,
        /// As the workspace was at this instant (RFC 3339, or a duration
        /// meaning that long ago: 2h, 7d).
        #[arg(long, value_name = "TIMESTAMP")]
        at: Option<String>,
    },
    /// Show one name's current version.
    Show {
        /// The name.
        name: String,
        /// As it was at this instant.
        #[arg(long, value_name = "TIMESTAMP")]
        at: Option<String>,
    },
    /// Write a name's content to standard output.
    // `--version` here picks a version of the file; without this, the
    // program's own `--version` (propagated to every subcommand) would clash
    // with it and clap panics on `files cat`.
    #[command(disable_version_flag = true)]
    Cat {
        /// The name.
        name: String,
        /// An older version (see `files history`).
        #[arg(long, conflicts_with = "at")]
        version: Option<u64>,
        /// The content it had at this instant.
        #[arg(long, value_name = "TIMESTAMP")]
        at: Option<String>,
    },
    /// Every version of a name, newest first.
    History {
        /// The name.
        name: String,
    },
    /// Delete names: each gets a deletion version (recoverable until gc).
    Rm {
        /// The names.
        #[arg(value_name = "NAME", required_unless_present = "prefix")]
        names: Vec<String>,
        /// Every name starting with this.
        #[arg(long, value_name = "PREFIX", conflicts_with = "names")]
        prefix: Option<String>,
        #[command(flatten)]
        session: ChangeSessionArgs,
    },
    /// Make an older version of a name current again, as a new version.
    #[command(disable_version_flag = true)]
    Restore {
        /// The name.
        name: String,
        /// The version to bring back (see `files history`).
        #[arg(long)]
        version: u64,
        #[command(flatten)]
        session: ChangeSessionArgs,
    },
}

/// `intake serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on (port 0: any free port, printed).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// Serve every workspace folder in DIR, each under its folder's name.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// The URL clients reach this server at, for the upload URLs sessions
    /// hand out (behind a reverse proxy: its https:// address). Default:
    /// http:// and the request's Host.
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Largest upload body, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 5 << 30)]
    pub max_upload_bytes: u64,
    /// Most files one upload session takes.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub max_files_per_session: u64,
    /// Most upload sessions one API key may have open.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub max_open_sessions: u64,
    /// Longest a request other than an upload may take.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub request_timeout: String,
    /// Longest an upload may send nothing before it is cut off.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub upload_idle_timeout: String,
    /// Most requests served at once; more are answered 503.
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub max_in_flight: usize,
    /// Most connections open at once; more are closed as they come.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_connections: usize,
    /// After SIGINT/SIGTERM, how long uploads in flight may take to finish.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub stop_timeout: String,
    /// Show the status page at / to every client, not only this machine's.
    #[arg(long)]
    pub public_status: bool,
    /// Serve HTTPS with this certificate chain (PEM; with --tls-key).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM; with --tls-cert).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Log format (one line per request).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `intake keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Create a key and print it (the only time it is shown).
    Create {
        /// A name for the key (who or what uses it).
        #[arg(long)]
        name: String,
        /// The user its sessions are created by: "Given Family" (default:
        /// the key's name).
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// List the keys (never the keys themselves).
    List,
    /// Revoke a key: it stops working at once.
    Revoke {
        /// The key's name.
        name: String,
    },
}
