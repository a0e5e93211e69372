//! The `hearth` binary: the server (no subcommand) and promtool-like tools.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// hearth: a clustered, Prometheus-compatible monitoring database.
#[derive(Parser, Debug)]
#[command(name = "hearth", version, about)]
struct Cli {
    #[command(flatten)]
    server: ServerFlags,

    #[command(subcommand)]
    command: Option<Command>,
}

/// Flags of the server, named as Prometheus names them.
#[derive(Args, Debug)]
struct ServerFlags {
    /// Address to listen on for the web interface and API.
    #[arg(long = "web.listen-address", default_value = "0.0.0.0:9090")]
    web_listen_address: SocketAddr,

    /// Prometheus configuration file; without it, hearth scrapes itself every 15s.
    #[arg(long = "config.file")]
    config_file: Option<PathBuf>,

    /// The URL under which hearth is reached from outside (links in alerts'
    /// generatorURL and `$externalURL` in templates); by default
    /// `http://<hostname>:<listen port>/`, as Prometheus does.
    #[arg(long = "web.external-url", default_value = "")]
    web_external_url: String,

    /// Base path for metrics storage.
    #[arg(long = "storage.tsdb.path", default_value = "data/")]
    storage_tsdb_path: PathBuf,

    /// How long to retain samples in storage, e.g. 15d, 12h.
    #[arg(long = "storage.tsdb.retention.time", default_value = "15d", value_parser = parse_duration_ms)]
    retention_time_ms: i64,

    /// Maximum number of bytes of storage blocks to retain, e.g. 512MB, 10GB; 0 is no limit.
    #[arg(long = "storage.tsdb.retention.size", default_value = "0", value_parser = parse_bytes)]
    retention_size_bytes: u64,

    /// Duration of blocks cut from the head (for tests; Prometheus's hidden flag).
    #[arg(long = "storage.tsdb.min-block-duration", default_value = "2h", value_parser = parse_duration_ms)]
    min_block_duration_ms: i64,

    /// Largest block compaction produces; default 10% of retention, at most 31d.
    #[arg(long = "storage.tsdb.max-block-duration", value_parser = parse_duration_ms)]
    max_block_duration_ms: Option<i64>,

    /// fsync the WAL on every commit (true), or, as Prometheus, only when a WAL
    /// segment is closed (false). Either way every commit is written to the WAL file
    /// before it is acknowledged; without fsync a crash of the machine (not of the
    /// process) can lose the commits of the active segment.
    #[arg(long = "storage.tsdb.wal-fsync", default_value_t = false, action = clap::ArgAction::Set)]
    wal_fsync: bool,

    /// Truncate the WAL at a corrupted record instead of refusing to start.
    #[arg(long = "storage.tsdb.wal-repair", default_value_t = false)]
    wal_repair: bool,

    /// Enable API endpoints for admin control actions.
    #[arg(long = "web.enable-admin-api", default_value_t = false)]
    enable_admin_api: bool,

    /// Run the built-in Alertmanager with this alertmanager.yml, serving its API v2
    /// on this node's listener.
    #[arg(long = "alertmanager.config.file")]
    alertmanager_config_file: Option<PathBuf>,

    /// Accept remote-write requests on /api/v1/write.
    #[arg(long = "web.enable-remote-write-receiver", default_value_t = false)]
    enable_remote_write_receiver: bool,

    /// Enable shutdown and reload via HTTP request.
    #[arg(long = "web.enable-lifecycle", default_value_t = false)]
    enable_lifecycle: bool,

    /// The maximum lookback duration for retrieving metrics during expression evaluations.
    #[arg(long = "query.lookback-delta", default_value = "5m", value_parser = parse_duration_ms)]
    query_lookback_delta_ms: i64,

    /// Maximum number of samples a single query can load into memory.
    #[arg(long = "query.max-samples", default_value_t = 50_000_000)]
    query_max_samples: usize,

    /// Maximum time a query may take before being aborted.
    #[arg(long = "query.timeout", default_value = "2m", value_parser = parse_duration_ms)]
    query_timeout_ms: i64,

    /// Maximum number of queries executed concurrently.
    #[arg(long = "query.max-concurrency", default_value_t = 20)]
    query_max_concurrency: usize,

    /// This node's id, unique in its cluster (default 1 without other cluster flags).
    #[arg(long = "cluster.node-id")]
    cluster_node_id: Option<u64>,

    /// Address the cluster's gRPC server listens on, e.g. 0.0.0.0:9095.
    #[arg(long = "cluster.listen-address")]
    cluster_listen_address: Option<SocketAddr>,

    /// host:port other nodes reach this node's gRPC server at (default: the listen address).
    #[arg(long = "cluster.advertise-address")]
    cluster_advertise_address: Option<String>,

    /// Comma-separated gRPC addresses of the nodes that form a new cluster together.
    #[arg(long = "cluster.initial-peers", value_delimiter = ',')]
    cluster_initial_peers: Vec<String>,

    /// Longest downtime after which alerts' `for` state is still restored from storage.
    #[arg(long = "rules.alert.for-outage-tolerance", default_value = "1h", value_parser = parse_duration_ms)]
    rules_alert_for_outage_tolerance_ms: i64,

    /// Least time a restored pending alert waits before firing; rules whose `for`
    /// is shorter than this are not restored.
    #[arg(long = "rules.alert.for-grace-period", default_value = "10m", value_parser = parse_duration_ms)]
    rules_alert_for_grace_period_ms: i64,

    /// Least time between two sends of a still-firing alert to Alertmanagers.
    #[arg(long = "rules.alert.resend-delay", default_value = "1m", value_parser = parse_duration_ms)]
    rules_alert_resend_delay_ms: i64,

    /// How many alerts wait to be sent to Alertmanagers; beyond this the oldest
    /// are dropped.
    #[arg(
        long = "alertmanager.notification-queue-capacity",
        default_value_t = 10000
    )]
    alertmanager_notification_queue_capacity: usize,

    /// gRPC address of any member of a running cluster to join.
    #[arg(long = "cluster.join")]
    cluster_join: Option<String>,

    /// A member that has not answered the leader for this long is marked down and
    /// its scrape targets and rule groups move to the others.
    #[arg(long = "cluster.failure-timeout", default_value = "15s", value_parser = parse_flag_duration)]
    cluster_failure_timeout: std::time::Duration,

    /// How long a query waits for another node's data before answering without it.
    #[arg(long = "cluster.query-timeout", default_value = "30s", value_parser = parse_duration_ms)]
    cluster_query_timeout_ms: i64,

    /// Answer queries without a slow or failed node's data (with a warning) instead
    /// of failing them.
    #[arg(long = "cluster.partial-response", default_value_t = true, action = clap::ArgAction::Set)]
    cluster_partial_response: bool,

    /// Copies of every appended sample: each node's WAL group has this many voters
    /// (capped by the cluster size); an append is acknowledged once a majority of
    /// them has it on disk.
    #[arg(long = "cluster.replication-factor", default_value_t = hearth::cluster::replication::REPLICATION_FACTOR_DEFAULT)]
    cluster_replication_factor: usize,

    /// A WAL group snapshots its TSDB (blocks plus a head checkpoint) every this
    /// many applied entries, then purges its log but for a tail of
    /// min(entries/4, 1000) entries for lagging replicas.
    #[arg(long = "cluster.wal-group.snapshot-entries", default_value_t = hearth::cluster::raft::GROUP_SNAPSHOT_ENTRIES_DEFAULT)]
    cluster_wal_group_snapshot_entries: u64,

    /// Size of a WAL group's log segment files: the log is purged in whole segments.
    #[arg(long = "cluster.wal-group.segment-size", default_value = "32MiB", value_parser = parse_bytes)]
    cluster_wal_group_segment_size: u64,

    /// How often a WAL group's leader sends heartbeats when it has nothing else to
    /// send, while it is not the group's owner (a group led by its owner sends
    /// none: its followers campaign only once no live member says it leads). A
    /// follower's election timeout is 4 to 6 intervals.
    #[arg(long = "cluster.wal-group.heartbeat-interval", default_value = "400ms", value_parser = parse_flag_duration)]
    cluster_wal_group_heartbeat_interval: std::time::Duration,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// TSDB tools, like promtool's.
    #[command(subcommand)]
    Tsdb(TsdbCommand),
    /// Check configuration files, like `promtool check`.
    #[command(subcommand)]
    Check(CheckCommand),
    /// Unit tests, like `promtool test`.
    #[command(subcommand)]
    Test(TestCommand),
    /// Run the Alertmanager alone, with Alertmanager's own flags.
    Alertmanager(AlertmanagerFlags),
    /// Ask a running cluster about its members or change them.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

/// `hearth cluster …`: talks to any member's cluster gRPC address.
#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Members, their roles and Raft states, the leader and the ring epoch.
    Status {
        /// gRPC address (`--cluster.advertise-address`) of any member.
        #[arg(long, default_value = "127.0.0.1:9095")]
        server: String,
    },
    /// Add the running node NODE_ID at GRPC_ADDRESS to the cluster of `--server`
    /// (e.g. a node removed earlier); new nodes usually join by themselves with
    /// `--cluster.join`.
    Join {
        /// gRPC address of any member of the cluster to join.
        #[arg(long, default_value = "127.0.0.1:9095")]
        server: String,
        /// The joining node's id.
        node_id: u64,
        /// The joining node's gRPC address.
        grpc_address: String,
    },
    /// The node at `--server` leaves its cluster.
    Leave {
        /// gRPC address of the node that leaves.
        #[arg(long, default_value = "127.0.0.1:9095")]
        server: String,
    },
    /// Remove member NODE_ID (a node that is gone for good). Removing the last
    /// voter is refused.
    Remove {
        /// gRPC address of any member.
        #[arg(long, default_value = "127.0.0.1:9095")]
        server: String,
        node_id: u64,
    },
}

/// Flags of `hearth alertmanager`, named as Alertmanager names them.
#[derive(Args, Debug)]
struct AlertmanagerFlags {
    /// Alertmanager configuration file.
    #[arg(long = "config.file", default_value = "alertmanager.yml")]
    config_file: PathBuf,
    /// Address to listen on for the API.
    #[arg(long = "web.listen-address", default_value = "0.0.0.0:9093")]
    web_listen_address: SocketAddr,
    /// Base path for silences and the notification log.
    #[arg(long = "storage.path", default_value = "data/")]
    storage_path: PathBuf,
    /// How long to keep data (expired silences, notification log entries).
    #[arg(long = "data.retention", default_value = "120h", value_parser = parse_duration_ms)]
    data_retention_ms: i64,
    /// The URL under which the Alertmanager is reached from outside, used in notifications.
    #[arg(long = "web.external-url", default_value = "")]
    web_external_url: String,
}

#[derive(Subcommand, Debug)]
enum TestCommand {
    /// Unit-test rule files with promtool's test file format, like `promtool test rules`.
    Rules {
        /// The unit test files.
        #[arg(required = true)]
        test_rule_files: Vec<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum CheckCommand {
    /// Check that configuration files are valid, like `promtool check config`.
    Config {
        #[arg(required = true)]
        config_files: Vec<PathBuf>,
    },
    /// Check rule files, like `promtool check rules`.
    Rules {
        #[arg(required = true)]
        rule_files: Vec<PathBuf>,
    },
    /// Check Alertmanager configuration files, like `amtool check-config`.
    #[command(name = "alertmanager-config")]
    AlertmanagerConfig {
        #[arg(required = true)]
        config_files: Vec<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum TsdbCommand {
    /// List the blocks of a data directory.
    List {
        /// Print times as RFC 3339 instead of milliseconds.
        #[arg(short = 'r', long = "human-readable")]
        human_readable: bool,
        #[arg(default_value = "data/")]
        db_path: PathBuf,
    },
    /// Print every sample: `{labels} value timestamp_ms`, like `promtool tsdb dump`.
    Dump {
        #[arg(default_value = "data/")]
        db_path: PathBuf,
        /// Minimum timestamp to dump, in ms.
        #[arg(long = "min-time", default_value_t = i64::MIN, allow_hyphen_values = true)]
        min_time: i64,
        /// Maximum timestamp to dump, in ms.
        #[arg(long = "max-time", default_value_t = i64::MAX, allow_hyphen_values = true)]
        max_time: i64,
        /// Series selector; may be repeated.
        #[arg(long = "match")]
        matches: Vec<String>,
    },
    /// Print statistics about a block (the newest by default).
    Analyze {
        #[arg(default_value = "data/")]
        db_path: PathBuf,
        block_id: Option<String>,
        /// How many items to show in each list.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Import samples from a file into blocks.
    #[command(name = "create-blocks-from", subcommand)]
    CreateBlocksFrom(CreateBlocksFrom),
}

#[derive(Subcommand, Debug)]
enum CreateBlocksFrom {
    /// OpenMetrics text with a timestamp on every sample.
    Openmetrics {
        input: PathBuf,
        #[arg(default_value = "data/")]
        output_dir: PathBuf,
        /// Duration of the blocks written.
        #[arg(long = "max-block-duration", default_value = "2h", value_parser = parse_duration_ms)]
        max_block_duration_ms: i64,
    },
}

/// Parses a Prometheus duration (`15d`, `2h30m`, `500ms`, `1y`) into milliseconds.
fn parse_duration_ms(s: &str) -> Result<i64, String> {
    hearth::config_units::parse_duration_ms(s)
}

/// Parses a positive Prometheus duration into a `Duration`.
fn parse_flag_duration(s: &str) -> Result<std::time::Duration, String> {
    match hearth::config_units::parse_duration_ms(s)? {
        ms if ms > 0 => Ok(std::time::Duration::from_millis(ms as u64)),
        _ => Err(format!("{s:?}: the duration must be greater than 0")),
    }
}

/// Parses a size such as `512MB` or `10GiB` into bytes (Prometheus's units: B, KB,
/// MB, GB, TB, PB, EB, powers of 1024).
fn parse_bytes(s: &str) -> Result<u64, String> {
    hearth::config_units::parse_bytes(s)
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Some(Command::Tsdb(cmd)) => run_tsdb_tool(cmd),
        Some(Command::Check(CheckCommand::Config { config_files })) => {
            let stdout = std::io::stdout();
            let stderr = std::io::stderr();
            let ok = hearth::cmd::check::check_config(
                &config_files,
                &mut stdout.lock(),
                &mut stderr.lock(),
            );
            return exit_code(ok);
        }
        Some(Command::Check(CheckCommand::Rules { rule_files })) => {
            let stdout = std::io::stdout();
            let stderr = std::io::stderr();
            let ok = hearth::cmd::check::check_rules(
                &rule_files,
                &mut stdout.lock(),
                &mut stderr.lock(),
            );
            return exit_code(ok);
        }
        Some(Command::Test(TestCommand::Rules { test_rule_files })) => {
            let stdout = std::io::stdout();
            let stderr = std::io::stderr();
            let ok = hearth::cmd::test_rules::test_rules(
                &test_rule_files,
                &mut stdout.lock(),
                &mut stderr.lock(),
            );
            return exit_code(ok);
        }
        Some(Command::Check(CheckCommand::AlertmanagerConfig { config_files })) => {
            let mut ok = true;
            for f in &config_files {
                match hearth::alertmanager::check_config_file(f) {
                    Ok(report) => print!("{report}"),
                    Err(e) => {
                        ok = false;
                        eprintln!("Checking '{}'  FAILED: {e}", f.display());
                    }
                }
            }
            return exit_code(ok);
        }
        Some(Command::Alertmanager(flags)) => run_alertmanager(flags),
        Some(Command::Cluster(cmd)) => run_cluster_tool(cmd),
        None => run_server(cli.server, flag_values(&matches)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // `hearth tsdb dump | head` closing the pipe early is not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs `hearth cluster …` and prints its answer.
fn run_cluster_tool(cmd: ClusterCommand) -> anyhow::Result<()> {
    use hearth::cmd::cluster;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let out = rt.block_on(async {
        match cmd {
            ClusterCommand::Status { server } => cluster::status(&server).await,
            ClusterCommand::Join {
                server,
                node_id,
                grpc_address,
            } => cluster::join(&server, node_id, &grpc_address).await,
            ClusterCommand::Leave { server } => cluster::leave(&server).await,
            ClusterCommand::Remove { server, node_id } => cluster::remove(&server, node_id).await,
        }
    })?;
    print!("{out}");
    Ok(())
}

/// The process exit code for a check that passed or failed.
fn exit_code(ok: bool) -> std::process::ExitCode {
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

fn run_tsdb_tool(cmd: TsdbCommand) -> anyhow::Result<()> {
    use hearth::cmd::tsdb;
    use std::io::IsTerminal;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cmd {
        TsdbCommand::List {
            human_readable,
            db_path,
        } => tsdb::list(&db_path, human_readable, &mut out)?,
        TsdbCommand::Dump {
            db_path,
            min_time,
            max_time,
            matches,
        } => tsdb::dump(&db_path, min_time, max_time, &matches, &mut out)?,
        TsdbCommand::Analyze {
            db_path,
            block_id,
            limit,
        } => tsdb::analyze(&db_path, block_id.as_deref(), limit, &mut out)?,
        TsdbCommand::CreateBlocksFrom(CreateBlocksFrom::Openmetrics {
            input,
            output_dir,
            max_block_duration_ms,
        }) => {
            let progress = std::io::stderr().is_terminal();
            let metas = tsdb::create_blocks_from_openmetrics(
                &input,
                &output_dir,
                max_block_duration_ms,
                progress,
            )?;
            eprintln!("wrote {} block(s) to {}", metas.len(), output_dir.display());
        }
    }
    Ok(())
}

/// The cluster settings from the `--cluster.*` flags.
fn cluster_config(flags: &ServerFlags) -> anyhow::Result<hearth::cluster::ClusterConfig> {
    let dir = flags.storage_tsdb_path.join("cluster");
    let web = flags.web_listen_address;
    let any_flag = flags.cluster_listen_address.is_some()
        || flags.cluster_advertise_address.is_some()
        || !flags.cluster_initial_peers.is_empty()
        || flags.cluster_join.is_some();
    if !any_flag {
        let node_id = flags.cluster_node_id.unwrap_or(1);
        let mut cfg = hearth::cluster::ClusterConfig::single_node(dir, web.to_string());
        cfg.node_id = node_id;
        cfg.failure_timeout = flags.cluster_failure_timeout;
        return Ok(cfg);
    }
    let Some(node_id) = flags.cluster_node_id else {
        anyhow::bail!("--cluster.node-id is required with the other --cluster.* flags");
    };
    let Some(listen) = flags.cluster_listen_address else {
        anyhow::bail!("--cluster.listen-address is required with the other --cluster.* flags");
    };
    let advertise = match &flags.cluster_advertise_address {
        Some(a) => a.clone(),
        None if listen.ip().is_unspecified() => anyhow::bail!(
            "--cluster.advertise-address is required when --cluster.listen-address is {listen}: \
             other nodes cannot reach an unspecified address"
        ),
        None => listen.to_string(),
    };
    // Peers reach the HTTP API at the advertised host when it listens on all interfaces.
    let http_address = if web.ip().is_unspecified() {
        let host = advertise
            .rsplit_once(':')
            .map_or(advertise.as_str(), |(h, _)| h);
        format!("{host}:{}", web.port())
    } else {
        web.to_string()
    };
    let mut peers: Vec<String> = flags
        .cluster_initial_peers
        .iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    peers.sort();
    peers.dedup();
    Ok(hearth::cluster::ClusterConfig {
        node_id,
        listen_address: Some(listen),
        advertise_address: Some(advertise),
        http_address,
        initial_peers: peers,
        join: flags.cluster_join.clone(),
        join_timeout: std::time::Duration::from_secs(60),
        dir,
        raft: wal_group_options(flags)?,
        failure_timeout: flags.cluster_failure_timeout,
        fanout: fanout_options(flags)?,
        replication_factor: replication_factor(flags)?,
    })
}

/// `--cluster.wal-group.snapshot-entries`, `--cluster.wal-group.segment-size` and
/// `--cluster.wal-group.heartbeat-interval`.
fn wal_group_options(flags: &ServerFlags) -> anyhow::Result<hearth::cluster::RaftOptions> {
    if flags.cluster_wal_group_snapshot_entries == 0 {
        anyhow::bail!("--cluster.wal-group.snapshot-entries must be at least 1");
    }
    let size = flags.cluster_wal_group_segment_size;
    let (min, max) = (hearth::wal::SEGMENT_SIZE_MIN, hearth::wal::SEGMENT_SIZE_MAX);
    if !(min..=max).contains(&size) {
        anyhow::bail!(
            "--cluster.wal-group.segment-size must be between {min} and {max} bytes, not {size}"
        );
    }
    let heartbeat = flags.cluster_wal_group_heartbeat_interval;
    if !(std::time::Duration::from_millis(10)..=std::time::Duration::from_secs(10))
        .contains(&heartbeat)
    {
        anyhow::bail!(
            "--cluster.wal-group.heartbeat-interval must be between 10ms and 10s, not {heartbeat:?}"
        );
    }
    Ok(hearth::cluster::RaftOptions {
        group_snapshot_entries: flags.cluster_wal_group_snapshot_entries,
        group_segment_size_bytes: size,
        group_heartbeat_interval_ms: heartbeat.as_millis() as u64,
        ..Default::default()
    })
}

/// `--cluster.replication-factor`.
fn replication_factor(flags: &ServerFlags) -> anyhow::Result<usize> {
    if flags.cluster_replication_factor == 0 {
        anyhow::bail!("--cluster.replication-factor must be at least 1");
    }
    Ok(flags.cluster_replication_factor)
}

/// `--cluster.query-timeout` and `--cluster.partial-response`.
fn fanout_options(flags: &ServerFlags) -> anyhow::Result<hearth::cluster::FanoutOptions> {
    if flags.cluster_query_timeout_ms <= 0 {
        anyhow::bail!("--cluster.query-timeout must be positive");
    }
    Ok(hearth::cluster::FanoutOptions {
        timeout: std::time::Duration::from_millis(flags.cluster_query_timeout_ms as u64),
        partial_response: flags.cluster_partial_response,
    })
}

/// Every server flag with its value as given (or its default), for
/// `/api/v1/status/flags`; flags without a value and no default are left out.
fn flag_values(matches: &clap::ArgMatches) -> Vec<(String, String)> {
    let cmd = <Cli as clap::CommandFactory>::command();
    let mut out = Vec::new();
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let id = arg.get_id().as_str();
        let Ok(Some(raw)) = matches.try_get_raw(id) else {
            continue;
        };
        let values: Vec<String> = raw.map(|v| v.to_string_lossy().into_owned()).collect();
        out.push((long.to_string(), values.join(",")));
    }
    out
}

fn run_server(flags: ServerFlags, flag_values: Vec<(String, String)>) -> anyhow::Result<()> {
    let cluster = cluster_config(&flags)?;
    let external_url = external_url(&flags.web_external_url, flags.web_listen_address)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("received shutdown signal, stopping");
            token.cancel();
        });
        let wal_fsync = if flags.wal_fsync {
            hearth::wal::FsyncPolicy::Always
        } else {
            hearth::wal::FsyncPolicy::SegmentClose
        };
        let max_block = flags.max_block_duration_ms.unwrap_or_else(|| {
            hearth::tsdb::db::default_max_block_duration(flags.retention_time_ms)
        });
        let cfg = hearth::server::ServerConfig {
            listen_address: flags.web_listen_address,
            storage_path: flags.storage_tsdb_path,
            db: hearth::tsdb::db::DbOptions {
                retention_ms: flags.retention_time_ms,
                retention_size_bytes: flags.retention_size_bytes,
                min_block_duration_ms: flags.min_block_duration_ms,
                max_block_duration_ms: max_block.max(flags.min_block_duration_ms),
                wal: hearth::wal::LogOptions {
                    fsync: wal_fsync,
                    repair: flags.wal_repair,
                    preallocate_bytes: wal_fsync.preallocate_bytes(),
                    ..Default::default()
                },
            },
            enable_admin_api: flags.enable_admin_api,
            enable_lifecycle: flags.enable_lifecycle,
            enable_remote_write_receiver: flags.enable_remote_write_receiver,
            alertmanager_config: flags.alertmanager_config_file,
            config_file: flags.config_file,
            query: hearth::promql::EngineOptions {
                lookback_delta_ms: flags.query_lookback_delta_ms.max(1),
                max_samples: flags.query_max_samples,
                timeout_ms: flags.query_timeout_ms.max(0) as u64,
                ..Default::default()
            },
            cluster,
            query_max_concurrency: flags.query_max_concurrency,
            rules: hearth::rules::manager::RuleOptions {
                restore: hearth::rules::group::RestoreOptions {
                    outage_tolerance_ms: flags.rules_alert_for_outage_tolerance_ms,
                    for_grace_period_ms: flags.rules_alert_for_grace_period_ms,
                },
                resend_delay_ms: flags.rules_alert_resend_delay_ms,
                notification_queue_capacity: flags.alertmanager_notification_queue_capacity,
                external_url,
                builtin_alertmanager_url: None,
            },
            flags: flag_values,
        };
        hearth::server::run(cfg, shutdown).await
    })?;
    Ok(())
}

/// `--web.external-url` as Prometheus computes it: the flag, or
/// `http://<hostname>:<listen port>/` when it is empty; the path's trailing slash
/// is dropped so links are joined as `URL/graph?...`.
fn external_url(flag: &str, listen: SocketAddr) -> anyhow::Result<String> {
    let url = if flag.is_empty() {
        let host = hostname().unwrap_or_else(|| "localhost".to_string());
        format!("http://{host}:{}/", listen.port())
    } else {
        flag.to_string()
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        anyhow::bail!("--web.external-url {url:?}: the URL must start with http:// or https://");
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// This machine's host name, as Go's `os.Hostname` gives it.
fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length, and gethostname writes at
    // most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec())
        .ok()
        .filter(|h| !h.is_empty())
}

fn run_alertmanager(flags: AlertmanagerFlags) -> anyhow::Result<()> {
    // Alertmanager computes its external URL as Prometheus does.
    let external_url = external_url(&flags.web_external_url, flags.web_listen_address)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("received shutdown signal, stopping");
            token.cancel();
        });
        let cfg = hearth::server::AlertmanagerServerConfig {
            config_file: flags.config_file,
            listen_address: flags.web_listen_address,
            options: hearth::alertmanager::Options {
                storage_path: Some(flags.storage_path),
                retention: std::time::Duration::from_millis(flags.data_retention_ms.max(0) as u64),
                external_url,
                ..Default::default()
            },
        };
        hearth::server::run_alertmanager(cfg, shutdown).await
    })?;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
