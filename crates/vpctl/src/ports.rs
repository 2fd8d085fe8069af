//! Free loopback ports for the child processes vpctl starts: `vp_server::ports` (drawn below the kernel's
//! ephemeral range, see there), with vpctl's error type.

use crate::CliError;

/// A loopback port that is free now and not handed out before by this process.
pub fn free_port() -> Result<u16, CliError> {
    vp_server::ports::free_port().map_err(|e| CliError::msg(e.to_string()))
}
