//! A progress display on a terminal; nothing when stderr is not one.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{ProgressBar, ProgressStyle};
use strata_build::Progress;

pub struct TerminalProgress {
    bar: Option<ProgressBar>,
    uploaded: AtomicU64,
}

impl TerminalProgress {
    pub fn new(enabled: bool) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} {pos}/{len}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        TerminalProgress {
            bar,
            uploaded: AtomicU64::new(0),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Progress for TerminalProgress {
    fn stage(&self, name: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(name.to_string());
        }
    }

    fn layers(&self, total: usize, reused: usize) {
        if let Some(bar) = &self.bar {
            bar.set_message("building layers");
            bar.set_length(total as u64);
            bar.set_position(reused as u64);
        }
    }

    fn layer_done(&self, _wheel: &str) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    fn uploaded(&self, bytes: u64) {
        let total = self.uploaded.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if let Some(bar) = &self.bar {
            bar.set_message(format!("pushing ({} KiB sent)", total / 1024));
        }
    }
}
