//! `allegro`: a trace store and query engine that speaks Tempo's protocols.

// Span conversion allocates many small strings; mimalloc is markedly faster at that than glibc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    allegro_engine::allocator::set_release(release_freed_memory);
    allegro_server::cli::main()
}

/// Hands mimalloc's freed pages back to the OS now rather than after its purge delay.
fn release_freed_memory() {
    // SAFETY: takes no pointers; safe to call from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) };
}
