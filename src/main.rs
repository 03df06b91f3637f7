use std::process::ExitCode;

fn main() -> ExitCode {
    fvol::cli::main()
}
