#![forbid(unsafe_code)]
use std::process::ExitCode;

use clap::Parser;

use chorus::cli::{Cli, Commands};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Commands::Serve(args) => args.settings().and_then(serve),
        Commands::User(cmd) => chorus::cli::user::run(cmd),
        Commands::Cluster(cmd) => chorus::cli::cluster::run(cmd),
        Commands::Defaults => {
            print!(
                "{}",
                toml::to_string(&chorus::config::Settings::default()).unwrap_or_default()
            );
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chorus: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(settings: chorus::config::Settings) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&settings.log.filter))
        .map_err(|e| anyhow::anyhow!("setting `log.filter`: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let system = actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    });
    system.block_on(chorus::node::serve(settings))
}
