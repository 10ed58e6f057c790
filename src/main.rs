fn main() {
    std::process::exit(servelab::cli::main());
}
