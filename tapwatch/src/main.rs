//! `tapwatch`: passive traffic-pattern anomaly detector for relays and load balancers.
//!
//! The binary parses flags, loads configuration and wires the library crates together;
//! the logic lives in `tapwatch-capture`, `tapwatch-classifier` and `tapwatch-analyzer`.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod alerts;
mod config;
mod console;
mod cpu;
mod engine;
mod evidence;
mod history;
mod http;
mod keepup;
mod live;
mod output;
mod packets;
mod replay;
mod sinks;
mod sources;
mod store;
mod views;

/// Passive traffic-pattern anomaly detector for relays and load balancers.
///
/// tapwatch reads packets from a mirror (SPAN/TAP) port or from pcap/pcapng files,
/// labels every packet by size class, protocol type and tenant from its headers alone
/// (payloads are never decrypted or stored), and raises alerts on the shape of the traffic:
/// heavy hitters, connection setups growing with the square of a tenant's nodes, missed
/// BFD/keepalive heartbeats and SYN-retransmission bursts.
#[derive(Parser, Debug)]
#[command(name = "tapwatch", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines on standard error: `human` (`tapwatch: LEVEL: message`) or `json` (one object
    /// per line with timestamp, level and message, for log shippers).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
}

/// How tapwatch writes its own log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `tapwatch: LEVEL: message`.
    Human,
    /// JSON lines.
    Json,
}

/// Human log lines: `tapwatch: message` for info, `tapwatch: warning: …` / `tapwatch: error: …`.
struct HumanLines;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for HumanLines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "error: ",
            tracing::Level::WARN => "warning: ",
            _ => "",
        };
        write!(w, "tapwatch: {level}")?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

fn init_logging(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO);
    let _ = match format {
        LogFormat::Human => builder.event_format(HumanLines).try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
}

const EXAMPLES: &str = "\
Examples:
  # Summarise the bundled demo capture, with its tenants file
  tapwatch replay data/demo.pcap --tenants data/demo.tenants.toml

  # Alerts as JSON lines on stdout (summary on stderr), for jq or a log shipper
  tapwatch replay data/demo.pcap --tenants data/demo.tenants.toml --alerts-out - | jq .kind

  # Several files (pcap, pcapng, .gz) merged in timestamp order, as JSON for scripts
  tapwatch replay day1.pcap.gz day2.pcapng --format json | jq .by_protocol_type

  # Replay at 10x capture speed so time-based behaviour plays out on the wall clock
  tapwatch replay trace.pcap --pace 10x

  # Watch a mirror port with 2 fan-out workers for 60 s (needs CAP_NET_RAW)
  tapwatch run --interface eth1 --workers 2 --duration 60

  # Only UDP, with a filter compiled by tcpdump
  tcpdump -ddd udp > udp.bpf && tapwatch run --interface eth1 --bpf-file udp.bpf

  # Write the bundled demo capture again
  tapwatch scenario demo --out data/demo.pcap";

#[derive(Subcommand, Debug)]
enum Command {
    /// Replay capture files through every detector; print a traffic summary and the alerts.
    ///
    /// Files may be pcap (either byte order, µs or ns timestamps), pcapng (any number of
    /// interfaces, per-interface link types and resolutions), or either one gzip-compressed;
    /// `-` reads standard input. Several files are merged into one stream in timestamp order.
    /// A truncated or corrupt tail is reported with its byte offset; every packet before it counts.
    #[command(
        after_help = "Examples:\n  tapwatch replay data/demo.pcap --tenants data/demo.tenants.toml\n  tapwatch replay a.pcap b.pcapng.gz --format json\n  zcat big.pcap.gz | tapwatch replay - --pace realtime"
    )]
    Replay(ReplayArgs),
    /// Capture live from an interface (a mirror port), detect, alert, and print a summary at the end.
    ///
    /// Uses a memory-mapped TPACKET_V3 ring per worker joined in one PACKET_FANOUT group
    /// (`--backend ring`, the default), or the portable pnet path (`--backend pnet`).
    /// Stops on SIGINT/SIGTERM (closing windows and draining webhooks), after `--duration`,
    /// or after `--count` packets. SIGHUP reloads `[rules]` and the tenants file.
    /// Serves /metrics and a JSON API on `--listen`.
    #[command(
        after_help = "Examples:\n  tapwatch run --interface eth1\n  tapwatch run --interface eth1 --workers 2 --duration 30 --format json\n  tapwatch run --interface veth1 --backend pnet --count 1000"
    )]
    Run(RunArgs),
    /// Check a config file and explain what it sets up.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Deliver what earlier runs left spooled — alerts for webhooks, rows for ClickHouse —
    /// then exit.
    #[command(
        after_help = "Examples:\n  tapwatch deliver --webhook https://hooks.example.net/tapwatch --drain-timeout 60\n  TAPWATCH_CLICKHOUSE_URL=http://127.0.0.1:8123 tapwatch deliver --data-dir /var/lib/tapwatch"
    )]
    Deliver(DeliverArgs),
    /// Print or apply the ClickHouse schema (versioned migrations).
    #[command(subcommand)]
    Schema(history::SchemaCommand),
    /// Ask the stored history a built-in question (ClickHouse or the file store).
    ///
    /// Questions: top-talkers (sources by packets in the heavy-hitter sketches, merged across
    /// agents), alerts, heartbeat-gaps (silences that ended and how long they were),
    /// setup-growth (per tenant: nodes, setups and the latest exponent), latency (handshake
    /// p50/p99/max per tenant and stage; with --measure, per server: handshake_server,
    /// handshake_client, response, echo, tcp_rtt or rst), retransmits (TCP data sent again per server: segments,
    /// retransmissions, share, zero windows, duplicate ACKs), upgrades (HTTP upgrade attempts
    /// per server: ok, refused, unanswered), drops (traffic_drop alert events), interfaces (sFlow agents' interface
    /// counters per agent and ifIndex: bits/s, packets, errors, discards). ClickHouse when `[clickhouse] url` or
    /// TAPWATCH_CLICKHOUSE_URL is set, else the file store under the data directory.
    #[command(
        after_help = "Examples:\n  tapwatch query top-talkers --since 1h\n  tapwatch query alerts --since 2026-11-17T14:00:00Z --until 2026-11-17T14:20:00Z --agent relay7\n  tapwatch query setup-growth --tenant acme --format json\n  TAPWATCH_CLICKHOUSE_URL=http://127.0.0.1:8123 tapwatch query latency --format csv\n  tapwatch query latency --measure response --since 1h\n  tapwatch query interfaces --since 1h"
    )]
    Query(history::QueryArgs),
    /// Load the file store (hourly TabSeparatedWithNames files) into ClickHouse.
    #[command(
        after_help = "Example:\n  TAPWATCH_CLICKHOUSE_URL=http://127.0.0.1:8123 tapwatch load --data-dir ./tapwatch-data"
    )]
    Load(history::LoadArgs),
    /// Write a seeded, labelled scenario capture (e.g. the bundled demo).
    #[command(after_help = "Example:\n  tapwatch scenario demo --out data/demo.pcap --seed 1")]
    Scenario(ScenarioArgs),
}

/// Output format of the summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned tables for people.
    Text,
    /// One JSON object for scripts.
    Json,
}

/// When to draw the progress bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// When standard error is a terminal.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// Options shared by `replay` and `run`.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Tenants file: `[[tenant]]` tables with `name` and `prefixes` (CIDR, IPv4 or IPv6).
    /// Sources matched by no prefix are tenant `unassigned`.
    #[arg(long, value_name = "FILE")]
    pub tenants: Option<PathBuf>,
    /// Config file (TOML); `[classifier]` may add `[[classifier.port]]` protocol types.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Summary format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// How many top sources to list.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
    /// Write one JSON line per finished window (each base window, 10 s and 60 s rollups):
    /// traffic, per-tenant setups, nodes and handshake latency p50/p99/max, top sources and
    /// services, servers' SYNs and retransmissions (`-`: standard output).
    #[arg(long, value_name = "PATH")]
    pub windows_out: Option<PathBuf>,
    #[command(flatten)]
    pub delivery: DeliveryArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Where rows of history go.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Keep no history: no rows to ClickHouse or the file store.
    #[arg(long)]
    pub no_store: bool,
    /// Agent id on every stored row (default: `[storage] agent_id`, else the host name).
    #[arg(long, value_name = "ID")]
    pub agent_id: Option<String>,
}

/// Where alerts are delivered besides the summary.
#[derive(Args, Debug, Clone)]
pub struct DeliveryArgs {
    /// POST every alert event to this URL as generic JSON (repeatable). Use `[[webhook]]` in
    /// the config for other formats, secrets and rate limits.
    #[arg(long = "webhook", value_name = "URL")]
    pub webhooks: Vec<String>,
    /// Data directory (default `./tapwatch-data`, or `[storage] data_dir`): the file store's
    /// hourly files, and the webhook and ClickHouse spools under `spool/`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// At exit, wait at most this many seconds for webhook deliveries; what is left stays
    /// spooled for the next run.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub drain_timeout: f64,
}

#[derive(Args, Debug)]
struct ReplayArgs {
    /// Capture files (pcap, pcapng, optionally .gz); `-` for standard input.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    #[command(flatten)]
    common: CommonArgs,
    /// Analyzer workers (1 to 256; default: every core). One reader classifies and deals
    /// packets to them by flow; results are the same for any number of workers.
    #[arg(long, value_name = "N", default_value_t = replay::default_workers())]
    workers: usize,
    /// Replay pace: `fast` (as fast as possible), `realtime`, or a factor such as `10x`.
    #[arg(long, default_value = "fast", value_name = "PACE")]
    pace: tapwatch_capture::Pace,
    /// With a paced replay, capture gaps longer than this many seconds are shortened to it.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    max_gap: f64,
    /// Progress bar with packets/s on standard error.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    progress: ProgressMode,
    /// Also print one line per packet with its labels (to standard error), like `tcpdump -r`.
    #[arg(long)]
    print_packets: bool,
    /// Write alert events as JSON lines to this file (`-`: standard output, and the summary
    /// goes to standard error). See docs/alerts.md for the fields.
    #[arg(long, value_name = "PATH")]
    alerts_out: Option<PathBuf>,
    /// After the replay, serve its status page, JSON API and the console over its stored
    /// history (/console/) on this address (e.g.
    /// 127.0.0.1:9178) until SIGINT/SIGTERM.
    #[arg(long, value_name = "ADDR")]
    serve: Option<String>,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Interface to capture on (put in promiscuous mode unless --no-promisc).
    #[arg(long, short = 'i', value_name = "IFACE")]
    interface: Option<String>,
    /// Receive sFlow v5 datagrams on this address (repeatable; also `[[sflow]]` in the
    /// config), e.g. `0.0.0.0:6343`. Sampled packets count as many packets as their rate.
    #[arg(long, value_name = "ADDR:PORT")]
    sflow: Vec<std::net::SocketAddr>,
    /// Keep 1 in N of the interface's packets, at random, in the kernel (a BPF program
    /// ahead of --bpf-file's); each counts as N packets. For mirror ports faster than the
    /// cores; missed heartbeats and per-flow detectors stay off for sampled packets.
    #[arg(long, value_name = "N", default_value_t = 1)]
    sample: u32,
    #[command(flatten)]
    common: CommonArgs,
    /// Capture path: `ring` (TPACKET_V3 + fan-out) or `pnet` (portable).
    #[arg(long, default_value = "ring")]
    backend: tapwatch_capture::live::Backend,
    /// Capture workers (one socket each, flows spread by the kernel's fan-out hash).
    #[arg(long, default_value_t = 1, value_name = "N")]
    workers: usize,
    /// Classic BPF program as printed by `tcpdump -ddd EXPR` (or `-dd`).
    #[arg(long, value_name = "FILE")]
    bpf_file: Option<PathBuf>,
    /// Leave the interface out of promiscuous mode.
    #[arg(long)]
    no_promisc: bool,
    /// Ring size per worker, MiB.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    ring_mib: u32,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Stop after at least this many packets.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Write alert events as JSON lines to this file (`-`: standard output).
    #[arg(long, value_name = "PATH")]
    alerts_out: Option<PathBuf>,
    /// Serve /metrics, /healthz, /readyz, /status, /api/{top,alerts,tenants} and the console
    /// over history (/console/, /api/history/…) here (`none` to turn off).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9178")]
    listen: String,
    /// Once the capture sockets are open, switch to this unprivileged user.
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
}

#[derive(Subcommand, Debug)]
enum RulesCommand {
    /// Validate a config file (every error names the line, the field and what was expected)
    /// and explain the detectors, rules, silences and webhooks it sets up.
    #[command(
        after_help = "Example:\n  tapwatch rules check /etc/tapwatch/tapwatch.toml --tenants /etc/tapwatch/tenants.toml"
    )]
    Check {
        /// The config file.
        file: PathBuf,
        /// A tenants file to check alongside.
        #[arg(long, value_name = "FILE")]
        tenants: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
struct DeliverArgs {
    /// Config file with `[[webhook]]` tables and/or `[clickhouse]`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    delivery: DeliveryArgs,
}

#[derive(Args, Debug)]
struct ScenarioArgs {
    /// Scenario name.
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(tapwatch_synth::NAMES))]
    name: String,
    /// Output pcap file; the ground truth goes beside it as `NAME.truth.json` and the
    /// tenants file as `NAME.tenants.toml`.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Random seed: the same seed writes the same bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Replay(a) => replay::run(replay::ReplayOptions {
            files: &a.files,
            common: &a.common,
            workers: a.workers,
            pace: a.pace,
            max_gap: a.max_gap,
            progress: a.progress,
            print_packets: a.print_packets,
            alerts_out: a.alerts_out.as_deref(),
            serve: a.serve.as_deref(),
        }),
        Command::Run(a) => live::run(live::LiveArgs {
            interface: a.interface,
            sflow: a.sflow,
            sample: a.sample,
            common: a.common,
            backend: a.backend,
            workers: a.workers,
            bpf_file: a.bpf_file,
            promiscuous: !a.no_promisc,
            ring_mib: a.ring_mib,
            duration: a.duration,
            count: a.count,
            alerts_out: a.alerts_out,
            listen: (a.listen != "none").then_some(a.listen),
            user: a.user,
        }),
        Command::Scenario(a) => scenario(&a),
        Command::Deliver(a) => deliver(&a),
        Command::Schema(c) => history::schema(&c),
        Command::Query(a) => history::query(&a),
        Command::Load(a) => history::load(&a),
        Command::Rules(RulesCommand::Check { file, tenants }) => {
            config::check(&file, tenants.as_deref())
        }
    };
    match result {
        // Rows lost to a full disk or spool: said in the log, and the run failed.
        Ok(()) if store::rows_lost() > 0 => ExitCode::from(1),
        Ok(()) => ExitCode::SUCCESS,
        // `tapwatch replay … | head`: the reader left; that is not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{}", error_chain(&e));
            ExitCode::from(2)
        }
    }
}

/// An error with its causes, each said once (a cause already quoted in its parent's
/// message is not repeated).
fn error_chain(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

fn deliver(a: &DeliverArgs) -> anyhow::Result<()> {
    let config = config::Config::load_or_default(a.config.as_deref())?;
    let data_dir = a
        .delivery
        .data_dir
        .clone()
        .unwrap_or_else(|| config.storage.data_dir.clone());
    let mut webhooks = sinks::Webhooks::start(&config.webhook, &a.delivery, &data_dir)?;
    let clickhouse = config.clickhouse.effective_url().is_some();
    anyhow::ensure!(
        !webhooks.is_empty() || clickhouse,
        "nothing to deliver to: give --webhook URL, [[webhook]] tables or [clickhouse] in --config, or TAPWATCH_CLICKHOUSE_URL"
    );
    engine::Sink::finish(&mut webhooks, &mut engine::RunReport::default())?;
    if clickhouse {
        let mut storage = config.storage.clone();
        storage.data_dir = data_dir;
        storage.drain_timeout_s = a.delivery.drain_timeout;
        let backend = tapwatch_storage::Backend::from_config(&config.clickhouse, &storage)?;
        // Spooled batches carry their own agent id; this one would name new rows (none).
        let agent = tapwatch_storage::agent::hostname();
        let store = tapwatch_storage::Store::start(&storage, backend, &agent)?;
        let describe = store.describe().to_string();
        anyhow::ensure!(
            !store.spool_owned_elsewhere(),
            "{describe}: the spool under {} is owned by another running tapwatch, which delivers it",
            storage.data_dir.display()
        );
        let left = store.close();
        anyhow::ensure!(
            left == 0,
            "{describe}: {left} batches remain spooled after {:.0} s",
            a.delivery.drain_timeout
        );
        println!("{describe}: spool delivered");
    }
    Ok(())
}

fn scenario(a: &ScenarioArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let scenario = tapwatch_synth::generate(&a.name, a.seed)
        .with_context(|| format!("unknown scenario {:?}", a.name))?;
    let stem = a.out.with_extension("");
    let truth_path = stem.with_extension("truth.json");
    let tenants_path = stem.with_extension("tenants.toml");
    let file =
        std::fs::File::create(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let n = scenario
        .capture
        .write(std::io::BufWriter::new(file))
        .with_context(|| format!("writing {}", a.out.display()))?;
    let truth = serde_json::json!({
        "scenario": a.name,
        "seed": a.seed,
        "capture": a.out.file_name().map(|f| f.to_string_lossy().into_owned()),
        "tenants": tenants_path.file_name().map(|f| f.to_string_lossy().into_owned()),
        "expected": scenario.expected,
    });
    std::fs::write(&truth_path, serde_json::to_string_pretty(&truth)? + "\n")
        .with_context(|| format!("writing {}", truth_path.display()))?;
    std::fs::write(&tenants_path, tapwatch_synth::TENANTS_TOML)
        .with_context(|| format!("writing {}", tenants_path.display()))?;
    tracing::info!(
        "wrote {n} packets of scenario {:?} (seed {}) to {}, ground truth to {}, tenants to {}",
        a.name,
        a.seed,
        a.out.display(),
        truth_path.display(),
        tenants_path.display()
    );
    Ok(())
}
