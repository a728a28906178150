//! The `freshet` binary, the thin top of the crate graph: it composes the broker library
//! (`freshet start` runs a broker, `freshet tune` prepares a host) and the client crate
//! (`freshet bench`, the load generator, and `freshet topic|group|produce|consume|cluster`, the
//! admin CLI: [`freshet_client::cli::Command`], flattened into this command tree).
//!
//! `freshet start` (its flags, logging, settings and retries) is `freshet::start`.
//!
//! The broker list of the admin commands and `bench` (`-b`, `--brokers`, `--bootstrap`) is also
//! accepted before the subcommand: a hidden global flag on [`Cli`] whose id, `brokers`, is the
//! one `ConnArgs` and the bench's `WorkloadArgs` use, so clap hands its value down to them.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "freshet",
    version,
    about = "A Kafka-compatible event streaming broker",
    after_help = freshet_client::cli::EXIT_CODES_HELP
)]
struct Cli {
    /// Broker(s) to bootstrap from, for the admin commands and `bench`: accepted before the
    /// subcommand too (`freshet -b host:9092 topic list`), as `-b`, `--brokers` or `--bootstrap`.
    /// Hidden here: each of those subcommands shows its own.
    #[arg(
        short = 'b',
        long = "brokers",
        visible_alias = "bootstrap",
        global = true,
        hide = true
    )]
    brokers: Option<String>,
    #[command(subcommand)]
    command: Command,
}

// The command line is parsed once: the size of its largest variant (`start`'s flags) is no
// cost worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run a broker until SIGINT/SIGTERM.
    Start(freshet::start::StartArgs),
    /// Prepare a host: check/apply its settings, measure the data disk (see tuning/README.md).
    #[command(subcommand)]
    Tune(freshet::tuning::TuneCommand),
    /// The client side: bench, topic, group, produce, consume, cluster.
    #[command(flatten)]
    Client(freshet_client::cli::Command),
    /// SCRAM users of a stopped node: create (the first user, before anyone can log in),
    /// list, delete.
    #[command(subcommand)]
    User(freshet::security::users::UserCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.brokers.is_some() && matches!(cli.command, Command::Start(_) | Command::Tune(_)) {
        // `start` listens (--listen) and `tune` talks to no broker: a broker list given to them
        // is a mistake, not something to ignore silently.
        eprintln!(
            "freshet: error: -b/--brokers/--bootstrap is for the admin commands and bench; \
             `freshet start` listens on --listen"
        );
        return ExitCode::from(freshet_client::cli::EXIT_USAGE);
    }
    match cli.command {
        Command::Start(args) => freshet::start::run(args),
        Command::Tune(cmd) => freshet::tuning::run(cmd),
        Command::Client(command) => command.run(),
        Command::User(command) => {
            freshet::security::users::run(command, &freshet::runtime::stored_scram_users)
        }
    }
}
