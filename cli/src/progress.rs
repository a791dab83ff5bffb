//! Transfer progress on stderr: one line per tenth of the model.

use std::collections::HashMap;
use std::sync::Mutex;

use herd_store::Progress;

/// A progress callback that prints `  40.21 of 98.36 MB` lines.
pub fn printer() -> impl Fn(Progress) + Send + Sync + 'static {
    let state = Mutex::new((HashMap::<String, u64>::new(), 0u64));
    move |p: Progress| {
        let mut guard = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (layers, printed_tenths) = &mut *guard;
        layers.insert(p.digest, p.current);
        let done: u64 = layers.values().sum();
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
