//! Transfer progress on stderr for transfers this process makes itself
//! (`herd package --push`, `herd serve --model` pulling): a bar on a
//! terminal, else one line per tenth of the model.

use std::collections::HashMap;
use std::sync::Mutex;

use herd_store::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress callback for a store transfer.
pub fn printer() -> impl Fn(Progress) + Send + Sync + 'static {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bar = terminal.then(|| {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{bar:40.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    });
    let state = Mutex::new((HashMap::<String, u64>::new(), 0u64));
    move |p: Progress| {
        let mut guard = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (layers, printed_tenths) = &mut *guard;
        layers.insert(p.digest, p.current);
        let done: u64 = layers.values().sum();
        if let Some(bar) = &bar {
            bar.set_length(p.total);
            bar.set_position(done);
            if done >= p.total {
                bar.finish_and_clear();
            }
            return;
        }
        let tenths = (done * 10).checked_div(p.total).unwrap_or(10);
        if tenths > *printed_tenths {
            *printed_tenths = tenths;
            eprintln!(
                "  {:.2} of {:.2} MB",
                done as f64 / 1e6,
                p.total as f64 / 1e6
            );
        }
    }
}
