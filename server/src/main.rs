//! `allegro`: a trace store and query engine that speaks Tempo's protocols.

// Span conversion allocates many small strings; mimalloc is markedly faster at that than glibc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    allegro_server::cli::main()
}
