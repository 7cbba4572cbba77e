//! `fieldvox-retrieval-bench`: retrieval latency at scale on one stack of backends.
//!
//! Fills the stack with `--chunks` chunks spread over `--tenants` tenants (ten manuals
//! each; generated maintenance text with codes and numbers, and synthetic unit vectors,
//! since embedding 100k chunks with the model would take most of an hour and retrieval
//! cost does not depend on where a vector came from), then asks each question twice
//! within a random tenant:
//! - cold: never seen — the query is embedded by the real model, then the keyword and
//!   vector searches run and the passages are read;
//! - warm: the same question again — the retrieval result comes from the cache and the
//!   passages are read from the store. On a stack with Redis it is also measured with no
//!   in-process layer (`warm_redis`), every lookup a Redis round trip.
//!
//! Prints one JSON line of p50/p99 (ms) per measure.

use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use fieldvox::backends::{Backends, BackendsConfig, CacheBackend, MetadataBackend, MongoConfig, RedisConfig};
use fieldvox::cache::memory::MemoryCache;
use fieldvox::cache::tiered::TieredCache;
use fieldvox::config::Config;
use fieldvox::rag::KnowledgeBase;
use fieldvox::rag::retrieve::RetrievalConfig;
use fieldvox::store::{Chunk, Manual, ManualExport};
use fieldvox::vector::{ChunkPoint, DIMENSIONS};
use serde_json::json;
use uuid::Uuid;

#[derive(Parser, Debug)]
#[command(about = "Retrieval p50/p99, warm and cold, at scale on the embedded or the shared stack")]
struct Args {
    /// `embedded` (SQLite, qdrant-edge, in-process cache) or `shared` (MongoDB + Redis;
    /// vectors on qdrant-edge, or on Qdrant with --qdrant-url).
    #[arg(long, default_value = "embedded")]
    stack: String,
    #[arg(long, default_value_t = 100)]
    tenants: usize,
    #[arg(long, default_value_t = 100_000)]
    chunks: usize,
    /// Questions asked (each cold, then warm).
    #[arg(long, default_value_t = 300)]
    questions: usize,
    #[arg(long, default_value = "mongodb://127.0.0.1:27017")]
    mongo_url: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    #[arg(long)]
    qdrant_url: Option<String>,
    /// Where the embedded stores are written (a fresh temp dir by default).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

/// Deterministic xorshift: the same seed fills and asks the same.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn unit_vector(&mut self) -> Vec<f32> {
        let v: Vec<f32> = (0..DIMENSIONS).map(|_| (self.next() % 2_000) as f32 / 1_000.0 - 1.0).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        v.into_iter().map(|x| x / norm).collect()
    }
}

const PARTS: [&str; 16] = [
    "compressor",
    "head bolts",
    "return air filter",
    "condenser fan",
    "drive belt",
    "expansion valve",
    "drain pan",
    "pressure switch",
    "blower motor",
    "contactor",
    "crankcase heater",
    "economizer",
    "thermostat",
    "refrigerant line",
    "control board",
    "igniter",
];
const ACTIONS: [&str; 8] = [
    "torque to",
    "replace every",
    "inspect after",
    "set the gap to",
    "check at",
    "clean every",
    "tighten to",
    "test at",
];
const UNITS: [&str; 6] = ["N·m", "months", "hours", "mm", "psi", "volts"];
const EQUIPMENT: [&str; 5] = ["RTU-40", "BW-9", "HX-220", "CX-3", "MX-7"];

fn sentence(rng: &mut Rng) -> String {
    format!(
        "{} {} {} {}; fault code E{} applies (part HX-{}).",
        rng.pick(&PARTS),
        rng.pick(&ACTIONS),
        rng.below(90) + 10,
        rng.pick(&UNITS),
        rng.below(90) + 10,
        rng.below(9_000) + 1_000
    )
}

fn question(rng: &mut Rng, i: usize) -> String {
    format!("what {} for the {} {} question {i}", rng.pick(&ACTIONS), rng.pick(&PARTS), rng.pick(&EQUIPMENT))
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples.get(i).copied().unwrap_or(0.0)
}

async fn fill(backends: &Backends, args: &Args, rng: &mut Rng) -> anyhow::Result<()> {
    let per_tenant = args.chunks / args.tenants;
    let per_manual = (per_tenant / 10).max(1);
    let started = Instant::now();
    for t in 0..args.tenants {
        let tenant = format!("tenant-{t}");
        for m in 0..per_tenant.div_ceil(per_manual) {
            let equipment = EQUIPMENT[m % EQUIPMENT.len()];
            let id = Uuid::new_v4();
            let count = per_manual.min(per_tenant - m * per_manual);
            let chunks: Vec<Chunk> = (0..count)
                .map(|i| Chunk {
                    id: Uuid::new_v4(),
                    tenant: tenant.clone(),
                    manual_id: id,
                    equipment: equipment.into(),
                    page: i as u32 / 3 + 1,
                    section: "Maintenance".into(),
                    seq: i as u32,
                    text: (0..3).map(|_| sentence(rng)).collect::<Vec<_>>().join(" "),
                })
                .collect();
            let manual = Manual {
                id,
                tenant: tenant.clone(),
                equipment: equipment.into(),
                title: format!("{equipment} manual {m}"),
                filename: format!("m{m}.pdf"),
                version: 1,
                pages: count as u32 / 3 + 1,
                chunks: count as u32,
                size: 0,
                sha256: id.simple().to_string(),
                uploaded_by: "bench".into(),
                blank_pages: Vec::new(),
                created_at: 0,
                updated_at: 0,
            };
            let points = chunks
                .iter()
                .map(|c| ChunkPoint {
                    chunk_id: c.id,
                    tenant: tenant.clone(),
                    equipment: equipment.into(),
                    manual_id: id,
                    page: c.page,
                    vector: rng.unit_vector(),
                })
                .collect();
            backends.index.upsert(points).await?;
            backends.store.import_manual(&ManualExport { manual, chunks }).await?;
        }
        if (t + 1) % 10 == 0 {
            eprintln!("filled {} of {} tenants ({:.0} s)", t + 1, args.tenants, started.elapsed().as_secs_f64());
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => tempfile::tempdir()?.keep(),
    };
    let mut backends_config = BackendsConfig::default();
    match args.stack.as_str() {
        "embedded" => {}
        "shared" => {
            backends_config.metadata = MetadataBackend::Mongodb;
            backends_config.cache = CacheBackend::Redis;
            backends_config.mongodb = MongoConfig {
                url: args.mongo_url.clone(),
                database: format!("bench_{}", Uuid::new_v4().simple()),
                timeout_ms: 30_000,
                ..MongoConfig::default()
            };
            backends_config.redis =
                RedisConfig { url: args.redis_url.clone(), timeout_ms: 1_000, ..RedisConfig::default() };
            if let Some(url) = &args.qdrant_url {
                backends_config.vectors = fieldvox::backends::VectorBackend::Qdrant;
                backends_config.qdrant.url = url.clone();
            }
        }
        other => anyhow::bail!("--stack is embedded or shared, not {other:?}"),
    }
    let backends = Backends::open(&backends_config, &dir).await?;
    let mut rng = Rng(args.seed | 1);
    let fill_started = Instant::now();
    fill(&backends, &args, &mut rng).await?;
    let fill_secs = fill_started.elapsed().as_secs_f64();

    let config = Config::default();
    let redis = backends.redis.clone();
    let (kb, backends) =
        tokio::task::spawn_blocking(move || KnowledgeBase::open(&config, &backends).map(|kb| (kb, backends))).await??;
    let retrieval = RetrievalConfig::default();
    // Load the model and warm the stores before measuring.
    kb.retrieve("tenant-0", None, "warm up the model", &retrieval).await?;

    let asked: Vec<(String, String)> =
        (0..args.questions).map(|i| (format!("tenant-{}", rng.below(args.tenants)), question(&mut rng, i))).collect();
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    let mut passages = 0;
    for (tenant, q) in &asked {
        let started = Instant::now();
        let (found, timings) = kb.retrieve(tenant, None, q, &retrieval).await?;
        cold.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(!timings.cache_hit, "a cold question was never asked");
        passages += found.len();
        let started = Instant::now();
        let (_, timings) = kb.retrieve(tenant, None, q, &retrieval).await?;
        warm.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(timings.cache_hit, "the repeat is served from the cache");
    }
    let mut report = json!({
        "stack": args.stack,
        "vectors": if args.qdrant_url.is_some() { "qdrant" } else { "edge" },
        "tenants": args.tenants,
        "chunks": args.chunks,
        "questions": args.questions,
        "fill_secs": (fill_secs * 10.0).round() / 10.0,
        "passages_per_question": passages as f64 / args.questions.max(1) as f64,
        "cold_p50_ms": percentile(&mut cold, 0.5),
        "cold_p99_ms": percentile(&mut cold, 0.99),
        "warm_p50_ms": percentile(&mut warm, 0.5),
        "warm_p99_ms": percentile(&mut warm, 0.99),
    });
    if let Some(link) = redis {
        // The same lookups with no in-process layer: each one a Redis round trip.
        let redis_only = Arc::new(TieredCache::new(MemoryCache::new(0), Some(link)));
        let kb = KnowledgeBase::new(kb.store.clone(), kb.index.clone(), kb.embedder.clone(), redis_only);
        let mut warm_redis = Vec::new();
        for (tenant, q) in &asked {
            let started = Instant::now();
            let (_, timings) = kb.retrieve(tenant, None, q, &retrieval).await?;
            warm_redis.push(started.elapsed().as_secs_f64() * 1000.0);
            assert!(timings.cache_hit, "served from Redis");
        }
        report["warm_redis_p50_ms"] = json!(percentile(&mut warm_redis, 0.5));
        report["warm_redis_p99_ms"] = json!(percentile(&mut warm_redis, 0.99));
    }
    println!("{report}");
    drop(kb);
    drop(backends);
    if args.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
