//! The `echovalue` binary: parse the arguments, run the command, exit with its status
//! (0 for 2xx, 1 for 4xx, 2 for 5xx, an unreachable server, a local error or a usage error).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = echovalue_cli::Cli::parse();
    ExitCode::from(echovalue_cli::run(cli))
}
