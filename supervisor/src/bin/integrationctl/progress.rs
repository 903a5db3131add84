//! Progress of a long-running command: one line on standard error, rewritten in place,
//! shown only to a person at a terminal. In a pipe, in a log, or with `-o json` it stays
//! silent, so that what a script reads is the command's outcome alone.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::render::Output;

/// How often a command without progress reports of its own says it is still at work.
pub const TICK: Duration = Duration::from_millis(250);

/// The progress line of one command.
#[derive(Debug)]
pub struct Progress {
    shown: bool,
    started: Instant,
    drawn: bool,
}

impl Progress {
    /// Shown when `output` is a table and standard error is a terminal.
    pub fn new(output: Output) -> Self {
        Self::shown_when(output == Output::Table && std::io::stderr().is_terminal())
    }

    fn shown_when(shown: bool) -> Self {
        Self {
            shown,
            started: Instant::now(),
            drawn: false,
        }
    }

    /// Replaces the line with `text`.
    pub fn update(&mut self, text: &str) {
        if !self.shown {
            return;
        }
        // `\r` back to the start, the text, then erase what a longer line left.
        eprint!("\r{text}\x1b[K");
        let _ = std::io::stderr().flush();
        self.drawn = true;
    }

    /// `what`, with the time it has taken so far (for calls that report nothing until
    /// they end).
    pub fn working(&mut self, what: &str) {
        let seconds = self.started.elapsed().as_secs();
        self.update(&format!("{what} ({seconds} s)"));
    }

    /// Ends the line, so that what follows starts on its own.
    pub fn finish(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Awaits `call`, saying `what` on the progress line until it ends.
pub async fn while_working<T>(
    progress: &mut Progress,
    what: &str,
    call: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(call);
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            done = &mut call => {
                progress.finish();
                return done;
            }
            _ = tick.tick() => progress.working(what),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_progress_line_draws_nothing() {
        let mut progress = Progress::shown_when(false);
        progress.update("scanning");
        progress.working("rebuilding");
        assert!(
            !progress.drawn,
            "nothing was written, so nothing needs ending"
        );
        let mut shown = Progress::shown_when(true);
        shown.update("scanning");
        assert!(shown.drawn);
        shown.finish();
        assert!(!shown.drawn);
    }
}
