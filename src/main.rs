//! The `fieldvox` command: run the server, mint development tokens, ingest manuals, ask
//! a running server a question.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use fieldvox::app::App;
use fieldvox::auth::{Role, TokenKeys};
use fieldvox::backends::Backends;
use fieldvox::client::{AskOptions, Question};
use fieldvox::config::Config;
use fieldvox::rag::KnowledgeBase;
use fieldvox::rag::ingest::NewManual;
use fieldvox::store::Job;
use indicatif::{ProgressBar, ProgressStyle};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "fieldvox", version, about = "Real-time voice assistant that answers from your equipment manuals")]
struct Cli {
    /// Configuration file (TOML). Environment variables FIELDVOX__SECTION__KEY override it.
    #[arg(long, short, global = true, env = "FIELDVOX_CONFIG")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (loads the local models, then listens).
    Serve {
        /// Listen address, overriding `server.listen`.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Development only: accept tokens signed with the built-in secret, which anyone
        /// can mint (what `fieldvox token` signs with when `auth.jwt_secret` is not set).
        #[arg(long)]
        dev: bool,
    },
    /// Mint a bearer token signed with `auth.jwt_secret` (or the development secret).
    Token {
        #[arg(long, value_parser = fieldvox::auth::parse_tenant)]
        tenant: String,
        #[arg(long)]
        user: String,
        /// technician, admin or ops.
        #[arg(long, default_value = "technician")]
        role: Role,
        /// Lifetime in seconds (default: `auth.token_ttl_secs`).
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Manage a running server's manuals over its HTTP API (needs an admin token for
    /// changes, or mints one from the configured secret with --tenant/--user).
    Manuals {
        #[command(subcommand)]
        action: ManualsAction,
        /// The server's base URL.
        #[arg(long, global = true, env = "FIELDVOX_HTTP_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Bearer token. Without it, an admin token is minted from --tenant/--user and the configured secret.
        #[arg(long, global = true, env = "FIELDVOX_TOKEN")]
        token: Option<String>,
        #[arg(long, global = true, default_value = "demo", value_parser = fieldvox::auth::parse_tenant)]
        tenant: String,
        #[arg(long, global = true, default_value = "cli")]
        user: String,
    },
    /// Add a manual (PDF, HTML, Markdown or text) to a tenant's knowledge base in a data
    /// dir directly, with no server running (`fieldvox manuals upload` talks to one).
    Ingest {
        /// The manual file.
        file: PathBuf,
        #[arg(long, value_parser = fieldvox::auth::parse_tenant)]
        tenant: String,
        /// Equipment the manual covers, e.g. RTU-40.
        #[arg(long)]
        equipment: String,
        /// Title used in citations (default: the file name).
        #[arg(long)]
        title: Option<String>,
    },
    /// Ask a running server a question, typed or from a WAV file; print the transcript,
    /// answer, citations and timings, and optionally save the spoken answer.
    #[command(group(clap::ArgGroup::new("question").required(true).args(["text", "wav"])))]
    Ask {
        /// The question, typed.
        text: Option<String>,
        /// The question as speech: a WAV file (any rate, mono or stereo).
        #[arg(long)]
        wav: Option<PathBuf>,
        /// The server's realtime endpoint.
        #[arg(long, env = "FIELDVOX_URL", default_value = "ws://127.0.0.1:8080/v1/realtime")]
        url: String,
        /// Bearer token. Without it, one is minted from --tenant/--user and the configured secret.
        #[arg(long, env = "FIELDVOX_TOKEN", conflicts_with_all = ["tenant", "user"])]
        token: Option<String>,
        #[arg(long, default_value = "demo", value_parser = fieldvox::auth::parse_tenant)]
        tenant: String,
        #[arg(long, default_value = "cli")]
        user: String,
        /// Search only this equipment's manuals.
        #[arg(long)]
        equipment: Option<String>,
        /// Pipeline profile (default: the server's).
        #[arg(long)]
        pipeline: Option<String>,
        /// Write the spoken answer to this WAV file.
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Print the answer as JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Longest wait for the answer, in seconds.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
    /// Copy an embedded knowledge base (manuals, chunks, vectors) and its turn records to
    /// the backends this configuration names (`[backends]`: MongoDB, Qdrant), keeping
    /// every id. Safe to run again; the source is only read.
    Migrate {
        /// The embedded data dir to copy from (its `fieldvox.sqlite` and `vectors/`).
        #[arg(long)]
        from: PathBuf,
    },
    /// Speak text with the local Piper voice into a WAV file (to hear the voice, or to make test questions).
    Say {
        /// What to say.
        text: String,
        /// Output WAV file.
        #[arg(long, short)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum ManualsAction {
    /// Upload a manual and follow its ingest to the end.
    Upload {
        file: PathBuf,
        /// Equipment the manual covers, e.g. RTU-40.
        #[arg(long)]
        equipment: String,
        /// Title used in citations (default: the file name). The same equipment and title
        /// again uploads a new version.
        #[arg(long)]
        title: Option<String>,
    },
    /// List the tenant's manuals.
    List {
        /// Only this equipment's.
        #[arg(long)]
        equipment: Option<String>,
    },
    /// Show one manual.
    Show { id: String },
    /// Delete one manual (its text, vectors and cached answers).
    Delete { id: String },
}

fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("info,ort=warn,qdrant_edge=error,{}", fieldvox::rtc::QUIET_LOGS)));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let mut config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Token { tenant, user, role, ttl } => {
            let keys = TokenKeys::new(config.auth.signing_secret());
            println!("{}", keys.mint(&user, &tenant, role, ttl.unwrap_or(config.auth.token_ttl_secs)));
            Ok(())
        }
        Command::Manuals { action, url, token, tenant, user } => {
            let token = token
                .unwrap_or_else(|| TokenKeys::new(config.auth.signing_secret()).mint(&user, &tenant, Role::Admin, 600));
            runtime()?.block_on(manuals(action, url.trim_end_matches('/'), &token))
        }
        Command::Ingest { file, tenant, equipment, title } => {
            runtime()?.block_on(ingest(config, file, tenant, equipment, title))
        }
        Command::Ask { text, wav, url, token, tenant, user, equipment, pipeline, out, json, timeout_secs } => {
            let token = token.unwrap_or_else(|| {
                TokenKeys::new(config.auth.signing_secret()).mint(&user, &tenant, Role::Technician, 600)
            });
            let options = AskOptions {
                url,
                token,
                pipeline,
                equipment,
                output_rate: 24_000,
                timeout: Duration::from_secs(timeout_secs),
            };
            let question = match (text, wav) {
                (_, Some(path)) => {
                    let (samples, rate) = fieldvox::audio::wav::read_mono(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    Question::Speech { samples, rate }
                }
                (Some(text), None) => Question::Text(text),
                (None, None) => anyhow::bail!("give a question, or --wav FILE"),
            };
            let answer = runtime()?.block_on(fieldvox::client::ask(&options, question))?;
            if let Some(out) = &out {
                fieldvox::audio::wav::write_mono(out, &answer.audio, answer.audio_rate)?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                print_answer(&answer, out.as_deref());
            }
            Ok(())
        }
        Command::Migrate { from } => runtime()?.block_on(migrate(config, from)),
        Command::Say { text, out } => {
            let mut voice = fieldvox::voice::tts::piper::PiperVoice::load(&config.model_paths(), 1)?;
            let samples = voice.synthesize(&text)?;
            fieldvox::audio::wav::write_mono(&out, &samples, voice.sample_rate())?;
            eprintln!("wrote {} ({:.1} s)", out.display(), samples.len() as f64 / voice.sample_rate() as f64);
            Ok(())
        }
        Command::Serve { listen, dev } => {
            if let Some(listen) = listen {
                config.server.listen = listen;
            }
            config.auth.allow_dev_secret |= dev;
            runtime()?.block_on(serve(config))
        }
    }
}

fn print_answer(answer: &fieldvox::client::Answer, out: Option<&std::path::Path>) {
    if let Some(heard) = &answer.transcript {
        println!("heard:    {heard}");
    }
    println!("answer:   {}", answer.text);
    for c in &answer.citations {
        println!("source:   {}, page {} (score {:.2})", c.title, c.page, c.score);
    }
    if let Some(timings) = answer.timings.as_object() {
        let parts: Vec<String> = timings
            .iter()
            .filter_map(|(k, v)| Some(format!("{} {:.0} ms", k.trim_end_matches("_ms"), v.as_f64()?)))
            .collect();
        println!("timings:  {}", parts.join(", "));
    }
    match out {
        Some(path) => println!("audio:    {:.1} s written to {}", answer.audio_seconds, path.display()),
        None => println!("audio:    {:.1} s (save it with --out answer.wav)", answer.audio_seconds),
    }
    if answer.status != "completed" {
        println!("status:   {}", answer.status);
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

async fn ingest(
    config: Config,
    file: PathBuf,
    tenant: String,
    equipment: String,
    title: Option<String>,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let filename = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let settings = config.ingest.clone();
    let backends = Backends::open(&config.backends, &config.data.dir).await?;
    let kb = tokio::task::spawn_blocking(move || KnowledgeBase::open(&config, &backends)).await??;
    let bar = job_bar(&filename);
    let progress = |job: &Job| show_job(&bar, job);
    let new = NewManual { tenant, equipment, title, filename, uploaded_by: "fieldvox ingest".into() };
    let manual = kb.ingest(new, bytes, &settings, Some(&progress)).await?;
    bar.finish_and_clear();
    println!("{}", serde_json::to_string_pretty(&manual)?);
    Ok(())
}

async fn migrate(config: Config, from: PathBuf) -> anyhow::Result<()> {
    use fieldvox::backends::{BackendsConfig, MetadataBackend, VectorBackend};
    let target = &config.backends;
    if target.metadata == MetadataBackend::Sqlite && target.vectors == VectorBackend::Edge {
        anyhow::bail!(
            "the configuration names the embedded backends as the target; set backends.metadata = \"mongodb\" \
             (and backends.vectors = \"qdrant\") in the file given with --config"
        );
    }
    if !from.join("fieldvox.sqlite").is_file() {
        anyhow::bail!("{} holds no embedded knowledge base (no fieldvox.sqlite)", from.display());
    }
    let source = Backends::open(&BackendsConfig::default(), &from).await?;
    let target = Backends::open(target, &config.data.dir).await?;
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let progress = |c: &fieldvox::backends::migrate::Copied| {
        bar.set_message(format!("{} manuals, {} chunks, {} turns copied", c.manuals, c.chunks, c.turns));
    };
    let copied = fieldvox::backends::migrate::copy(&source, &target, &progress).await?;
    bar.finish_and_clear();
    println!("{}", serde_json::to_string_pretty(&copied)?);
    Ok(())
}

/// One call of the manuals API: the JSON body, or the server's refusal as an error.
async fn api_call(req: reqwest::RequestBuilder) -> anyhow::Result<serde_json::Value> {
    let resp = req.send().await.context("cannot reach the server")?;
    let status = resp.status();
    let body: serde_json::Value = if status == reqwest::StatusCode::NO_CONTENT {
        serde_json::Value::Null
    } else {
        resp.json().await.with_context(|| format!("unreadable answer ({status})"))?
    };
    if !status.is_success() {
        anyhow::bail!(
            "{status}: {} ({})",
            body["message"].as_str().unwrap_or("?"),
            body["error"].as_str().unwrap_or("?")
        );
    }
    Ok(body)
}

async fn manuals(action: ManualsAction, url: &str, token: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let print = |v: &serde_json::Value| serde_json::to_string_pretty(v).map(|s| println!("{s}"));
    match action {
        ManualsAction::Upload { file, equipment, title } => {
            let filename = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let handle =
                tokio::fs::File::open(&file).await.with_context(|| format!("cannot read {}", file.display()))?;
            let size = handle.metadata().await?.len();
            let stream = tokio_util::io::ReaderStream::new(handle);
            let part = reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), size)
                .file_name(filename.clone());
            let mut form = reqwest::multipart::Form::new().text("equipment", equipment).part("file", part);
            if let Some(title) = title {
                form = form.text("title", title);
            }
            let accepted = api_call(http.post(format!("{url}/v1/manuals")).bearer_auth(token).multipart(form)).await?;
            let Some(job) = accepted["job_id"].as_str() else {
                eprintln!("the same file is already live; nothing re-ingested");
                return Ok(print(&accepted)?);
            };
            let bar = job_bar(&filename);
            loop {
                let state = api_call(http.get(format!("{url}/v1/jobs/{job}")).bearer_auth(token)).await?;
                let job: Job = serde_json::from_value(state.clone()).context("unexpected job")?;
                show_job(&bar, &job);
                if job.state.is_final() {
                    bar.finish_and_clear();
                    if job.state == fieldvox::store::JobState::Failed {
                        anyhow::bail!(
                            "ingest failed: {} ({})",
                            job.message.unwrap_or_default(),
                            job.error.unwrap_or_default()
                        );
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            let manual = accepted["manual_id"].as_str().unwrap_or_default();
            print(&api_call(http.get(format!("{url}/v1/manuals/{manual}")).bearer_auth(token)).await?)?;
        }
        ManualsAction::List { equipment } => {
            let mut cursor: Option<String> = None;
            loop {
                let mut query: Vec<(&str, String)> = Vec::new();
                query.extend(equipment.clone().map(|e| ("equipment", e)));
                query.extend(cursor.clone().map(|c| ("cursor", c)));
                let page = api_call(http.get(format!("{url}/v1/manuals")).query(&query).bearer_auth(token)).await?;
                for m in page["manuals"].as_array().into_iter().flatten() {
                    println!(
                        "{}  {:<12} v{:<3} {:>5} pages  {}",
                        m["id"].as_str().unwrap_or("?"),
                        m["equipment"].as_str().unwrap_or("?"),
                        m["version"],
                        m["pages"],
                        m["title"].as_str().unwrap_or("?")
                    );
                }
                match page["next_cursor"].as_str() {
                    Some(next) => cursor = Some(next.to_string()),
                    None => break,
                }
            }
        }
        ManualsAction::Show { id } => {
            print(&api_call(http.get(format!("{url}/v1/manuals/{id}")).bearer_auth(token)).await?)?;
        }
        ManualsAction::Delete { id } => {
            api_call(http.delete(format!("{url}/v1/manuals/{id}")).bearer_auth(token)).await?;
            eprintln!("deleted {id}");
        }
    }
    Ok(())
}

/// A progress bar for an ingest job: its state, then chunks embedded of all.
fn job_bar(filename: &str) -> ProgressBar {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{prefix} {msg:<10} [{bar:30}] {pos}/{len} chunks")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(filename.to_string());
    bar
}

fn show_job(bar: &ProgressBar, job: &Job) {
    bar.set_message(job.state.as_str());
    bar.set_length(u64::from(job.chunks_total));
    bar.set_position(u64::from(job.chunks_done));
}

async fn serve(config: Config) -> anyhow::Result<()> {
    raise_fd_limit();
    let listener = bind(config.server.listen).with_context(|| format!("cannot listen on {}", config.server.listen))?;
    tracing::info!(models = %config.models.dir.display(), data = %config.data.dir.display(), "loading models");
    let app = tokio::task::spawn_blocking(move || App::build(config)).await??;
    fieldvox::http::serve(app, listener, shutdown_signal()?).await?;
    tracing::info!("stopped");
    Ok(())
}

/// A listener with a backlog deep enough for thousands of clients reconnecting at once.
fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed here, before the server
/// says it is listening: a signal from then on drains instead of killing the process.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    #[cfg(unix)]
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = term.recv() => {},
            _ = interrupt.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested");
    })
}

/// Thousands of sessions need thousands of descriptors: raise the soft limit to the hard
/// one, and say what the limit is, since it caps the sessions this process can hold.
fn raise_fd_limit() {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return;
            }
            let before = lim.rlim_cur;
            if lim.rlim_cur < lim.rlim_max {
                lim.rlim_cur = lim.rlim_max;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    lim.rlim_cur = before;
                }
            }
            tracing::info!(
                from = before,
                to = lim.rlim_cur,
                hard = lim.rlim_max,
                "open file limit (each session holds one descriptor)"
            );
        }
    }
}
