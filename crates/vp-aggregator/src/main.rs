//! `vp-aggregator`: combines the replies of a family's variant servers (see docs/dataplane.md).

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args = vp_aggregator::Args::parse();
    vp_server::init_logging(args.log_format);
    match vp_aggregator::serve(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vp-aggregator: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
