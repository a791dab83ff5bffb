//! `herd keys create|list|revoke --file PATH`: the gateway's API keys
//! (docs/security.md). The file keeps SHA-256 digests only; `create`
//! prints the new key once. A running gateway picks changes up within
//! seconds.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};
use herd_gateway::auth::{KeyRecord, KeysFile, Limits, Role, keys};

use crate::table;

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

/// Where the keys live.
#[derive(Debug, Args)]
struct FileArg {
    /// The keys file (the gateway's `keys_file`, `--keys-file`).
    #[arg(long, env = "HERD_KEYS_FILE")]
    file: PathBuf,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make a key and print it (only its digest is stored).
    Create {
        /// The key's name: the tenant its requests are queued as.
        name: String,
        #[command(flatten)]
        file: FileArg,
        /// `admin` may also pull, push, tag and delete models, and unload.
        #[arg(long, value_enum, default_value = "user")]
        role: RoleArg,
        /// Models the key may use (globs with `*`, `?`; repeatable;
        /// default every model).
        #[arg(long = "model", value_name = "GLOB")]
        models: Vec<String>,
        /// Requests per minute.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        rpm: Option<u32>,
        /// Tokens (prompt + completion) per minute.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        tpm: Option<u64>,
        /// Requests at once.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        concurrency: Option<u32>,
    },
    /// List the keys (names, roles, models, limits; never the keys).
    #[command(alias = "ls")]
    List {
        #[command(flatten)]
        file: FileArg,
    },
    /// Remove a key by name.
    #[command(alias = "rm")]
    Revoke {
        name: String,
        #[command(flatten)]
        file: FileArg,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    User,
    Admin,
}

pub fn run(args: KeysArgs) -> anyhow::Result<()> {
    match args.command {
        KeysCommand::Create {
            name,
            file,
            role,
            models,
            rpm,
            tpm,
            concurrency,
        } => {
            if let Err(reason) = keys::check_name(&name) {
                bail!("the key name {reason}");
            }
            let mut keys_file = KeysFile::load_or_empty(&file.file)?;
            if keys_file.keys.iter().any(|k| k.name == name) {
                bail!("a key named `{name}` exists; revoke it first or choose another name");
            }
            let role = match role {
                RoleArg::User => Role::User,
                RoleArg::Admin => Role::Admin,
            };
            let limits = Limits {
                requests_per_minute: rpm,
                tokens_per_minute: tpm,
                max_concurrent: concurrency,
            };
            let key = keys::generate();
            keys_file
                .keys
                .push(KeyRecord::new(&name, role, &key, models, limits));
            keys_file.validate()?;
            keys_file.save(&file.file)?;
            eprintln!(
                "Created key `{name}` ({}). It is shown only now:",
                role.as_str()
            );
            println!("{key}");
        }
        KeysCommand::List { file } => {
            let keys_file = KeysFile::load_or_empty(&file.file)?;
            let rows: Vec<Vec<String>> = keys_file
                .keys
                .iter()
                .map(|k| {
                    let limit = |v: Option<String>| v.unwrap_or_else(|| "-".into());
                    vec![
                        k.name.clone(),
                        k.role.as_str().to_owned(),
                        k.models.join(","),
                        limit(k.requests_per_minute.map(|v| v.to_string())),
                        limit(k.tokens_per_minute.map(|v| v.to_string())),
                        limit(k.max_concurrent.map(|v| v.to_string())),
                        format!("{}…", k.hint),
                        table::ago(i64::try_from(k.created_at).unwrap_or(0)),
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(
                    &[
                        "NAME",
                        "ROLE",
                        "MODELS",
                        "RPM",
                        "TPM",
                        "CONCURRENT",
                        "KEY",
                        "CREATED"
                    ],
                    &rows
                )
            );
        }
        KeysCommand::Revoke { name, file } => {
            let mut keys_file = KeysFile::load(&file.file)?;
            let before = keys_file.keys.len();
            keys_file.keys.retain(|k| k.name != name);
            if keys_file.keys.len() == before {
                bail!("no key named `{name}` in {}", file.file.display());
            }
            keys_file.save(&file.file)?;
            eprintln!("Revoked key `{name}`.");
        }
    }
    Ok(())
}
