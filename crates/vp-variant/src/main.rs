//! `vp-variant`: serves one variant of a family (see docs/dataplane.md).

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args = vp_variant::Args::parse();
    vp_server::init_logging(args.log_format);
    match vp_variant::serve(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vp-variant: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
