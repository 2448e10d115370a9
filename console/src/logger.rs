//! The `log` facade backend: `[LEVEL target] message` on the console.

use log::{LevelFilter, Log, Metadata, Record};

struct ConsoleLogger {
    image: &'static str,
}

impl Log for ConsoleLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            crate::println!("[{:<5} {}] {}", record.level(), self.image, record.args());
        }
    }

    fn flush(&self) {}
}

/// Installs the console logger for this image (`image` names it in every
/// line, e.g. `loader` or `guest`) at `level`. A second call only changes
/// the level.
pub fn init_logger(image: &'static str, level: LevelFilter) {
    // The logger must live for the rest of the run: the images never free.
    static LOADER: spin::Once<ConsoleLogger> = spin::Once::new();
    let logger = LOADER.call_once(|| ConsoleLogger { image });
    // Setting the logger fails only when one is already set, which is fine:
    // the level below still applies.
    let _ = log::set_logger(logger);
    log::set_max_level(level);
}
