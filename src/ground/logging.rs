//! Logging to stderr, for journald: start-up, trouble, and the request lines
//! the HTTP side writes (`request_log`). Never passwords, host keys or card
//! content.

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger {
    /// Under systemd, prefix lines with `<N>` so journald records the priority.
    journald: bool,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = if self.journald {
            let priority = match record.level() {
                Level::Error => 3,
                Level::Warn => 4,
                Level::Info => 6,
                Level::Debug | Level::Trace => 7,
            };
            format!("<{priority}>{}\n", record.args())
        } else {
            match record.level() {
                Level::Error => format!("error: {}\n", record.args()),
                Level::Warn => format!("warning: {}\n", record.args()),
                _ => format!("{}\n", record.args()),
            }
        };
        // One write per line, so lines from different threads never interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger. `LEITNER_LOG` (error, warn, info, debug) sets the level.
pub(crate) fn init() {
    let level = match std::env::var("LEITNER_LOG").as_deref() {
        Ok("error") => LevelFilter::Error,
        Ok("warn") => LevelFilter::Warn,
        Ok("debug") => LevelFilter::Debug,
        Ok("off") => LevelFilter::Off,
        _ => LevelFilter::Info,
    };
    let logger = StderrLogger {
        journald: std::env::var_os("JOURNAL_STREAM").is_some(),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}
