//! `allegro`: a trace store and query engine that speaks Tempo's protocols.

fn main() -> std::process::ExitCode {
    allegro_server::cli::main()
}
