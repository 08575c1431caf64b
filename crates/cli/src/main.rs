//! `deskmailctl`: the admin CLI. See the `deskmail_cli` crate docs (or `--help`) for the
//! commands and the exit codes.

fn main() -> std::process::ExitCode {
    deskmail_cli::main()
}
