//! `vpctl bench`: data-plane benchmarks (filled in below).

use crate::CliError;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

pub async fn bench(_a: BenchArgs) -> Result<(), CliError> {
    Err(CliError::msg("bench is not implemented yet"))
}
