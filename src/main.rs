//! The `sparse` command line.

/// Chunk-sized buffers in huge pages: a fraction of the page faults (src/huge_pages.rs).
#[global_allocator]
static ALLOCATOR: sparse::huge_pages::HugePages = sparse::huge_pages::HugePages;

fn main() {
    std::process::exit(sparse::cli::main());
}
