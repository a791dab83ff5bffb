//! `herd package`: a GGUF file (plus licenses, a chat template) becomes a
//! Docker model artifact in the local store, and optionally goes to a
//! registry.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use herd_store::PackageRequest;
use herd_worker::Catalog;

use crate::serve::StoreArgs;

#[derive(Debug, Args)]
pub struct PackageArgs {
    /// The GGUF file to package.
    #[arg(long)]
    gguf: PathBuf,
    /// A license file to include; repeatable.
    #[arg(long = "license")]
    licenses: Vec<PathBuf>,
    /// A Jinja chat template to include (overrides the GGUF's).
    #[arg(long)]
    chat_template: Option<PathBuf>,
    /// Context size to record in the config (default: the GGUF's).
    #[arg(long)]
    context_size: Option<u64>,
    /// Also push the model to its registry.
    #[arg(long)]
    push: bool,
    /// The reference to tag it with, e.g. `myorg/smollm2:q4` or
    /// `localhost:5000/ai/smollm2:latest`.
    target: String,
    #[command(flatten)]
    store: StoreArgs,
}

pub async fn run(args: PackageArgs) -> anyhow::Result<()> {
    let catalog = Catalog::open(&args.store.settings()).context("cannot open the model store")?;
    let target = catalog.store().parse_ref(&args.target)?;
    let request = PackageRequest {
        gguf: args.gguf.clone(),
        licenses: args.licenses.clone(),
        chat_template: args.chat_template.clone(),
        context_size: args.context_size,
        created_unix: None,
    };
    let model = {
        let (store, target) = (catalog.store().clone(), target.clone());
        tokio::task::spawn_blocking(move || store.package(&request, &target)).await??
    };
    println!(
        "Packaged {} as {} ({})",
        args.gguf.display(),
        target.familiar(catalog.store().default_registry()),
        model.id
    );
    if args.push {
        let progress: herd_store::ProgressFn = Arc::new(crate::progress::printer());
        catalog
            .registry()
            .push(catalog.store(), &model, &target, progress)
            .await
            .with_context(|| format!("cannot push {}", target.full()))?;
        println!("Pushed {}", target.full());
    }
    Ok(())
}
