//! `mirrorflow top`: a live view of a running mirror, in the spirit of `vector top`. The running
//! process answers a [`Snapshot`] on its admin socket (built from its own metrics registry, channel
//! capacities and progress); the command asks once a second, turns counters into rates and draws one
//! screen (or, when stdout is not a terminal, one plain line per stage and a summary per tick).

pub use crate::admin::snapshot::{Snapshot, Source, StageRow};
use std::io::Write;
use std::time::Duration;

/// Renders `now` against the previous snapshot (for rates) as lines of text.
pub fn render(prev: Option<&Snapshot>, now: &Snapshot) -> Vec<String> {
    let secs = prev.map(|p| now.at_unix_ms.saturating_sub(p.at_unix_ms) as f64 / 1000.0).filter(|s| *s > 0.0);
    let rate = |stage: &StageRow| -> String {
        let before = prev.and_then(|p| p.stages.iter().find(|r| r.stage == stage.stage)).map(|r| r.items_total);
        match (before, secs) {
            (Some(b), Some(s)) => format!("{:.1}", (stage.items_total - b).max(0.0) / s),
            _ => "-".into(),
        }
    };
    let mut lines = vec![format!("{:<12} {:>10} {:>18} {:>9}", "STAGE", "ITEMS/S", "QUEUE / CAPACITY", "RESTARTS")];
    for s in &now.stages {
        let queue = match (s.queue_depth, s.capacity) {
            (Some(d), Some(c)) => format!("{d:.0} / {c}"),
            (None, Some(c)) => format!("- / {c}"),
            _ => "-".into(),
        };
        lines.push(format!("{:<12} {:>10} {:>18} {:>9}", s.stage, rate(s), queue, s.restarts));
    }
    let breakers: Vec<String> = now.breakers.iter().map(|(r, s)| format!("{r} {s}")).collect();
    let lag = now.checkpoint_lag_seconds.map_or("-".into(), |l| format!("{l:.1}s"));
    lines.push(format!(
        "files mirrored {}  bytes mirrored {}  in flight {}  dead letters {}",
        now.files_mirrored, now.bytes_mirrored, now.in_flight, now.dead_letters
    ));
    lines.push(format!(
        "breakers: {}  checkpoint lag {lag}",
        if breakers.is_empty() { "-".to_string() } else { breakers.join(", ") }
    ));
    lines
}

/// Why `top` stopped short.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    /// The running mirror did not answer.
    #[error("{0}")]
    Admin(#[from] crate::admin::AdminError),
    /// Its answer was not a snapshot.
    #[error("the running mirror's answer is not a snapshot: {0}")]
    Decode(#[from] serde_json::Error),
    /// The terminal failed.
    #[error("terminal: {0}")]
    Io(#[from] std::io::Error),
}

/// Asks the mirror running over `dir` for one snapshot.
pub fn ask(dir: &std::path::Path) -> Result<Snapshot, TopError> {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = crate::admin::ask(
        dir,
        &crate::admin::Request::Top,
        &mut crate::admin::Output { out: &mut out, err: &mut err },
    )?;
    if code != 0 {
        let why = String::from_utf8_lossy(&err).trim().to_string();
        return Err(crate::admin::AdminError::Usage(why).into());
    }
    Ok(serde_json::from_slice(&out)?)
}

/// Runs `top` until `q`, Ctrl-C, or (when `ticks` is given) that many refreshes. On a terminal it
/// redraws one screen; otherwise it prints the lines of each tick, separated by a blank line.
pub fn run(dir: &std::path::Path, every: Duration, ticks: Option<u64>) -> Result<(), TopError> {
    let term = console::Term::stdout();
    let interactive = term.is_term();
    let (quit_tx, quit) = std::sync::mpsc::channel::<()>();
    if interactive {
        let keys = term.clone();
        std::thread::spawn(move || {
            loop {
                match keys.read_key() {
                    Ok(console::Key::Char('q' | 'Q')) | Ok(console::Key::CtrlC) | Err(_) => {
                        let _ = quit_tx.send(());
                        return;
                    }
                    Ok(_) => {}
                }
            }
        });
        term.hide_cursor()?;
    }
    let result = draw_loop(dir, &term, interactive, every, ticks, &quit);
    if interactive {
        let _ = term.show_cursor();
    }
    result
}

fn draw_loop(
    dir: &std::path::Path,
    term: &console::Term,
    interactive: bool,
    every: Duration,
    ticks: Option<u64>,
    quit: &std::sync::mpsc::Receiver<()>,
) -> Result<(), TopError> {
    let mut prev: Option<Snapshot> = None;
    let mut n = 0u64;
    loop {
        let now = ask(dir)?;
        let lines = render(prev.as_ref(), &now);
        if interactive {
            term.clear_screen()?;
            term.write_line(&format!("mirrorflow top ({}) — q to quit", dir.display()))?;
        }
        let mut out = std::io::stdout().lock();
        for l in &lines {
            writeln!(out, "{l}")?;
        }
        if !interactive {
            writeln!(out)?;
        }
        out.flush()?;
        drop(out);
        prev = Some(now);
        n += 1;
        if ticks.is_some_and(|t| n >= t) {
            return Ok(());
        }
        match quit.recv_timeout(every) {
            Ok(()) => return Ok(()),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            // No key reader (not a terminal): only a signal or `ticks` ends it.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(every),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::snapshot::{from_metrics, tests::TEXT};
    use std::collections::BTreeMap;

    #[test]
    fn rates_are_items_per_second_between_two_snapshots() {
        let caps = BTreeMap::new();
        let before = Snapshot { at_unix_ms: 1_000, ..from_metrics(TEXT, &caps) };
        let after_text = TEXT.replace("committed\"} 40", "committed\"} 60");
        let after = Snapshot { at_unix_ms: 3_000, ..from_metrics(&after_text, &caps) };
        let lines = render(Some(&before), &after);
        let committer = lines.iter().find(|l| l.starts_with("committer")).unwrap();
        assert!(committer.contains("10.0"), "{committer}");
        assert!(render(None, &after).iter().any(|l| l.starts_with("committer") && l.contains(" - ")));
    }
}
