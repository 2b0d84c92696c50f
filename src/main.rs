use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Palisade: a security edge proxy.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with a config file.
    Run {
        #[arg(short, long, default_value = "palisade.toml")]
        config: PathBuf,
    },
    /// Run the bundled demo: the proxy on 127.0.0.1:8080 in front of a sample app.
    Demo,
    /// Validate a config file; print every error as file:line:col: message.
    Check {
        #[arg(short, long, default_value = "palisade.toml")]
        config: PathBuf,
    },
    /// SecLang rule tools.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Load rule files in order (Includes followed); print the rule count,
    /// or every error as file:line: message.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run { config } => palisade::app::run(&config),
        Command::Demo => palisade::app::demo(),
        Command::Check { config } => palisade::app::check(&config),
        Command::Rules {
            command: RulesCommand::Check { files },
        } => palisade::app::rules_check(&files),
    };
    ExitCode::from(code)
}

// mimalloc: the proxy allocates many small, short-lived buffers per request;
// glibc malloc spent ~8% of CPU on them under load (see `palisade::alloc`).
#[global_allocator]
static GLOBAL: palisade::alloc::Mimalloc = palisade::alloc::Mimalloc;
