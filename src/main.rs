fn main() -> std::process::ExitCode {
    rdp_doctor::cli::main()
}
