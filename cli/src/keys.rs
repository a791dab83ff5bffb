//! `herd keys create|list|revoke`: the gateway's API keys
//! (docs/security.md), in a keys file (`--file`) or, for a cluster, in its
//! etcd (`--etcd`; gateways with `keys_from_etcd` follow them). Only
//! SHA-256 digests are kept; `create` prints the new key once. Running
//! gateways pick changes up within seconds.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use herd_gateway::auth::{KeyRecord, KeysFile, Limits, Role, etcd, keys};
use herd_gateway::state::{Created, Keys, StateStore};

use crate::table;

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

/// Where the keys live: a file, or the cluster's etcd.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct Place {
    /// The keys file (the gateway's `keys_file`, `--keys-file`).
    #[arg(long, env = "HERD_KEYS_FILE")]
    file: Option<PathBuf>,
    /// The cluster's etcd endpoints (comma-separated), for gateways with
    /// `keys_from_etcd`.
    #[arg(
        long,
        env = "HERD_ETCD",
        value_name = "URL[,URL…]",
        value_delimiter = ','
    )]
    etcd: Vec<String>,
    /// Key prefix in etcd (default `/herd/`), as the gateways'.
    #[arg(long, env = "HERD_ETCD_PREFIX", requires = "etcd")]
    etcd_prefix: Option<String>,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make a key and print it (only its digest is stored).
    Create {
        /// The key's name: the tenant its requests are queued as.
        name: String,
        #[command(flatten)]
        place: Place,
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
        place: Place,
    },
    /// Remove a key by name.
    #[command(alias = "rm")]
    Revoke {
        name: String,
        #[command(flatten)]
        place: Place,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    User,
    Admin,
}

/// The keys' home, opened.
enum Home {
    File(PathBuf),
    Etcd(Arc<dyn StateStore>, Keys),
}

impl Home {
    async fn open(place: Place) -> anyhow::Result<Self> {
        if let Some(file) = place.file {
            return Ok(Self::File(file));
        }
        let endpoints = herd_gateway::state::settings::split_endpoints(&place.etcd);
        herd_gateway::state::settings::check_endpoints(&endpoints)
            .map_err(|reason| anyhow::anyhow!("--etcd: {reason}"))?;
        let store = herd_gateway::state::connect(&endpoints)
            .await
            .context("cannot reach etcd")?;
        let prefix = place
            .etcd_prefix
            .unwrap_or_else(|| herd_gateway::state::DEFAULT_PREFIX.to_owned());
        Ok(Self::Etcd(store, Keys::new(&prefix)))
    }

    async fn list(&self) -> anyhow::Result<Vec<KeyRecord>> {
        match self {
            Self::File(path) => Ok(KeysFile::load_or_empty(path)?.keys),
            Self::Etcd(store, keys) => {
                let listing = store.list(&keys.api_keys()).await?;
                Ok(listing
                    .items
                    .iter()
                    .filter_map(|kv| etcd::decode(&kv.key, &kv.value))
                    .collect())
            }
        }
    }

    /// Adds `record`; fails if its name is taken.
    async fn create(&self, record: KeyRecord) -> anyhow::Result<()> {
        let name = record.name.clone();
        let taken = || {
            anyhow::anyhow!("a key named `{name}` exists; revoke it first or choose another name")
        };
        match self {
            Self::File(path) => {
                let mut file = KeysFile::load_or_empty(path)?;
                if file.keys.iter().any(|k| k.name == name) {
                    return Err(taken());
                }
                file.keys.push(record);
                file.validate()?;
                file.save(path)?;
            }
            Self::Etcd(store, keys) => {
                KeysFile {
                    keys: vec![record.clone()],
                }
                .validate()?;
                match store
                    .create(&keys.api_key(&name), etcd::encode(&record), None)
                    .await?
                {
                    Created::Created(_) => {}
                    Created::Exists(_) => return Err(taken()),
                }
            }
        }
        Ok(())
    }

    /// Removes the key named `name`; fails if there is none.
    async fn revoke(&self, name: &str) -> anyhow::Result<()> {
        match self {
            Self::File(path) => {
                let mut file = KeysFile::load(path)?;
                let before = file.keys.len();
                file.keys.retain(|k| k.name != name);
                if file.keys.len() == before {
                    bail!("no key named `{name}` in {}", path.display());
                }
                file.save(path)?;
            }
            Self::Etcd(store, keys) => {
                let key = keys.api_key(name);
                let listing = store.list(&key).await?;
                let Some(found) = listing.items.iter().find(|kv| kv.key == key) else {
                    bail!("no key named `{name}` in etcd under {}", keys.api_keys());
                };
                // Only the record read: a key re-created meanwhile stays.
                if !store.delete_at(&key, found.mod_revision).await? {
                    bail!("the key `{name}` changed meanwhile; list the keys and try again");
                }
            }
        }
        Ok(())
    }
}

pub async fn run(args: KeysArgs) -> anyhow::Result<()> {
    match args.command {
        KeysCommand::Create {
            name,
            place,
            role,
            models,
            rpm,
            tpm,
            concurrency,
        } => {
            if let Err(reason) = keys::check_name(&name) {
                bail!("the key name {reason}");
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
            let home = Home::open(place).await?;
            let key = keys::generate();
            home.create(KeyRecord::new(&name, role, &key, models, limits))
                .await?;
            eprintln!(
                "Created key `{name}` ({}). It is shown only now:",
                role.as_str()
            );
            println!("{key}");
        }
        KeysCommand::List { place } => {
            let records = Home::open(place).await?.list().await?;
            let rows: Vec<Vec<String>> = records
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
        KeysCommand::Revoke { name, place } => {
            Home::open(place).await?.revoke(&name).await?;
            eprintln!("Revoked key `{name}`.");
        }
    }
    Ok(())
}
