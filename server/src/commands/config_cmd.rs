//! `allegro config check FILE`: validates a config file and prints the values in effect.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Config;

/// Options of `allegro config`.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ConfigCommand,
}

/// `allegro config` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file and print every setting in effect, defaults included.
    Check {
        /// The YAML file.
        file: PathBuf,
        /// Output format of the effective settings.
        #[arg(long, default_value = "yaml", value_parser = ["yaml", "json"])]
        format: String,
    },
}

/// Runs `allegro config`; exit 0 when valid, 2 when not.
pub fn run(args: ConfigArgs) -> ExitCode {
    let ConfigCommand::Check { file, format } = args.command;
    let effective = Config::load(&file).and_then(|c| Ok((c.effective()?, c.warnings())));
    match effective {
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Ok((values, warnings)) => {
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            let text = if format == "json" {
                serde_json::to_string_pretty(&values).unwrap_or_default() + "\n"
            } else {
                serde_yaml::to_string(&values).unwrap_or_default()
            };
            eprintln!(
                "{} is valid{}; effective settings:",
                file.display(),
                if warnings.is_empty() {
                    String::new()
                } else {
                    format!(" ({} warning(s))", warnings.len())
                }
            );
            print!("{text}");
            ExitCode::SUCCESS
        }
    }
}
