//! The `sparse` command line.

fn main() {
    std::process::exit(sparse::cli::main());
}
