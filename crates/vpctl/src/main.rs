//! `vpctl`: run a variant-parallel ensemble on one machine, classify images, evaluate accuracy while variants
//! fail, and benchmark the data plane. See docs/dataplane.md.

mod bench;
mod classify;
mod eval;
mod overload;
mod ports;
mod procs;
mod run;
mod runstate;
mod stats;
mod testset;
mod verify;
mod wire;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "vpctl",
    version,
    about = "Variant-parallel ensembles: run, classify, evaluate, benchmark"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an ensemble locally: one process per variant plus the aggregator, restarted when they crash.
    Run(run::RunArgs),
    /// Classify an image file (PNG or JPEG) with the running ensemble.
    Classify(classify::ClassifyArgs),
    /// Stream the Fashion-MNIST test set through the running ensemble, optionally killing variants midway.
    Eval(eval::EvalArgs),
    /// Benchmark bare ONNX Runtime, the variant servers and the aggregator on this machine.
    Bench(bench::BenchArgs),
    /// Drive one variant server at twice its saturating load with load shedding on and off, and compare.
    Overload(overload::OverloadArgs),
    /// Re-measure a family's accuracy tables with ONNX Runtime and compare them with its manifest.
    Verify(verify::VerifyArgs),
}

/// An error ending a vpctl command, printed as one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CliError(pub String);

impl CliError {
    pub fn msg(m: impl Into<String>) -> Self {
        Self(m.into())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The benchmark times single requests: its client runs on one thread, so a request's future, its connection
    // and its reply never hop between threads (two cross-thread wake-ups per request on a multi-thread runtime).
    let mut builder = if matches!(cli.command, Command::Bench(_)) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vpctl: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Run(a) => run::run(a).await,
            Command::Classify(a) => classify::classify(a).await,
            Command::Eval(a) => eval::eval(a).await,
            Command::Bench(a) => bench::bench(a).await,
            Command::Verify(a) => verify::verify(a).await,
            Command::Overload(a) => overload::overload(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vpctl: {e}");
            ExitCode::FAILURE
        }
    }
}
