//! `fieldvox-reference`: the load-test reference provider server (see `fieldvox_load::reference`).

use clap::Parser;
use fieldvox_load::reference::{ReferenceArgs, serve};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let args = ReferenceArgs::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    serve(args, listener).await?;
    Ok(())
}
