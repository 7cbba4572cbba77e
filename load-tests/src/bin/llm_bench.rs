//! `fieldvox-llm-bench`: the local LLM's engines side by side, on the same GGUF file and
//! the same grounded prompts, in one run.
//!
//! Each prompt is what the `local-llm` profile sends for one benchmark question: its
//! system prompt, then two evidence sentences from the page that answers it (the one
//! stating the fact and the next), labelled with their source. Engines take turns on
//! every round, so a machine that speeds up or slows down during the run affects them
//! alike. It reports prompt reading and writing speed, the first token, and whether the
//! answers state the fact.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use fieldvox::llm::local::{Generation, LlmEngine, LocalLlm, cpu_threads, grounded_user_message};
use fieldvox::llm::{ChatMessage, Role};
use fieldvox::models::ModelPaths;
use fieldvox::rag::evidence::sentences;
use fieldvox_load::eval::corpus::Corpus;
use fieldvox_load::eval::score::states;

#[derive(Parser, Debug)]
#[command(about = "Measure the local LLM's engines on the same model and prompts, side by side")]
struct Args {
    /// Engines to compare (default: every engine this build has).
    #[arg(long, value_delimiter = ',', value_parser = parse_engine)]
    engines: Vec<LlmEngine>,
    /// The benchmark's data directory (manuals and questions).
    #[arg(long, default_value = "load-tests/eval")]
    corpus: PathBuf,
    /// Profiles directory.
    #[arg(long, default_value = "pipelines")]
    pipelines: PathBuf,
    /// The profile whose system prompt and token limit the prompts use.
    #[arg(long, default_value = "local-llm")]
    profile: String,
    /// Passes over every prompt per engine.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Only every Nth answerable question (1 = all).
    #[arg(long, default_value_t = 1)]
    every: usize,
    /// Print every answer.
    #[arg(long)]
    verbose: bool,
}

fn parse_engine(s: &str) -> Result<LlmEngine, String> {
    [LlmEngine::Candle, LlmEngine::CandleQuantized, LlmEngine::LlamaCpp]
        .into_iter()
        .find(|e| e.as_str() == s)
        .ok_or_else(|| format!("unknown engine {s:?} (candle, candle-quantized, llama-cpp)"))
}

struct Prompt {
    messages: Vec<ChatMessage>,
    facts: Vec<String>,
}

/// The grounded prompt for every answerable question with a page.
fn prompts(corpus: &Corpus, system: &str, every: usize) -> anyhow::Result<Vec<Prompt>> {
    let mut out = Vec::new();
    for q in corpus.questions.iter().filter(|q| q.answerable()).step_by(every.max(1)) {
        let (Some(title), Some(page)) = (&q.manual, q.page) else { continue };
        let manual = corpus
            .manuals
            .iter()
            .find(|m| &m.title == title && m.tenant == q.tenant)
            .with_context(|| format!("{}: no manual {title}", q.id))?;
        let text = manual.pages.get(page as usize - 1).with_context(|| format!("{}: no page {page}", q.id))?;
        let sentences = sentences(text);
        let fact = q.facts.first().map(String::as_str).unwrap_or_default();
        let Some(at) = sentences.iter().position(|s| states(s, fact)) else {
            bail!("{}: no sentence on page {page} states {fact:?}", q.id);
        };
        let evidence = sentences[at..sentences.len().min(at + 2)].join(" ");
        let excerpt = (format!("{title}, page {page}"), evidence);
        out.push(Prompt {
            messages: vec![
                ChatMessage { role: Role::System, content: system.to_string() },
                ChatMessage { role: Role::User, content: grounded_user_message(&[excerpt], &q.text) },
            ],
            facts: q.facts.clone(),
        });
    }
    Ok(out)
}

/// One engine's totals over every prompt and round.
#[derive(Default)]
struct Totals {
    runs: Vec<Generation>,
    first_token_ms: Vec<f64>,
    /// Round one's answers, per prompt.
    answers: Vec<String>,
}

fn p50(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let engines = if args.engines.is_empty() {
        [LlmEngine::Candle, LlmEngine::CandleQuantized, LlmEngine::LlamaCpp]
            .into_iter()
            .filter(|e| e.is_built())
            .collect()
    } else {
        args.engines.clone()
    };
    let profiles = fieldvox::pipeline::profile::load_dir(&args.pipelines)?;
    let profile = profiles.get(&args.profile).with_context(|| format!("no profile {}", args.profile))?;
    let corpus = Corpus::load(&args.corpus)?;
    let prompts = prompts(&corpus, &profile.llm.system_prompt, args.every)?;
    let max_tokens = profile.llm.max_tokens;
    let gguf = ModelPaths::new(ModelPaths::default_root()).smollm2_gguf()?;

    let mut loaded = Vec::new();
    for engine in &engines {
        let started = Instant::now();
        let llm = LocalLlm::load(&gguf, *engine).with_context(|| format!("loading {}", engine.as_str()))?;
        eprintln!("{}: loaded in {:.0} ms", engine.as_str(), started.elapsed().as_secs_f64() * 1e3);
        loaded.push((*engine, llm));
    }
    eprintln!("{} prompts, {} rounds, max {max_tokens} tokens, {} threads", prompts.len(), args.rounds, cpu_threads());

    let mut totals: BTreeMap<LlmEngine, Totals> = BTreeMap::new();
    for round in 0..=args.rounds {
        // Round 0 warms caches and allocators and is not counted; then engines take turns.
        if round > 1 {
            loaded.rotate_left(1);
        }
        for (engine, llm) in &mut loaded {
            let t = totals.entry(*engine).or_default();
            for prompt in &prompts {
                let started = Instant::now();
                let mut first = None;
                let mut text = String::new();
                let run = llm.generate(&prompt.messages, max_tokens, &mut |piece| {
                    first.get_or_insert_with(|| started.elapsed().as_secs_f64() * 1e3);
                    text.push_str(piece);
                    true
                })?;
                if round == 0 {
                    continue;
                }
                t.runs.push(run);
                t.first_token_ms.extend(first);
                if round == 1 {
                    if args.verbose {
                        eprintln!("{}: {:?}", engine.as_str(), text.trim());
                    }
                    t.answers.push(text);
                }
            }
        }
    }

    let reference = totals.get(&LlmEngine::Candle).map(|t| t.answers.clone());
    println!(
        "| engine | prompt tokens (read after the kept prefix) | prompt reading | writing | first token p50 | answers stating the fact | same answer as `candle` |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (engine, t) in &totals {
        let sum = |f: fn(&Generation) -> f64| t.runs.iter().map(f).sum::<f64>();
        let prompt_tokens = sum(|g| g.prompt_tokens as f64) / t.runs.len().max(1) as f64;
        let read = sum(|g| g.prompt_read as f64);
        let prefill_tps = read / (sum(|g| g.prefill_ms) / 1e3);
        let decode_tps = sum(|g| g.generated as f64) / (sum(|g| g.decode_ms) / 1e3);
        let stating = t.answers.iter().zip(&prompts).filter(|(a, p)| p.facts.iter().all(|f| states(a, f))).count();
        let same = reference
            .as_ref()
            .map(|r| r.iter().zip(&t.answers).filter(|(a, b)| a == b).count().to_string())
            .unwrap_or_else(|| "—".into());
        println!(
            "| `{}` | {prompt_tokens:.0} ({:.0}) | {prefill_tps:.0} tokens/s | {decode_tps:.0} tokens/s | {:.0} ms | {stating}/{} | {same}/{} |",
            engine.as_str(),
            read / t.runs.len().max(1) as f64,
            p50(&t.first_token_ms),
            prompts.len(),
            prompts.len(),
        );
    }
    Ok(())
}
