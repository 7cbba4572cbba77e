//! `fieldvox-eval`: the answer-quality benchmark (see `fieldvox_load::eval`).

use clap::Parser;
use fieldvox_load::eval::{EvalArgs, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,fieldvox=warn,qdrant_edge=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = EvalArgs::parse();
    let report = run(args).await?;
    println!("{}", report.table());
    Ok(())
}
