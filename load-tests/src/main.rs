//! `fieldvox-load`: see the library docs; this is its command line.

use clap::Parser;
use fieldvox_load::{Args, Scenario};

fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| format!("warn,{}", fieldvox::rtc::QUIET_LOGS).into());
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if args.scenario == Scenario::Abandon {
        let report = runtime.block_on(fieldvox_load::abandon::run(args))?;
        println!("{}", report.table());
        return Ok(());
    }
    let report = runtime.block_on(fieldvox_load::run(args))?;
    println!("{}", report.table());
    Ok(())
}
