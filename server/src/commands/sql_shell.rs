//! Where `allegro sql` reads its statements: a line editor on a terminal (arrow keys, Ctrl-R
//! search, history kept across sessions in `$ALLEGRO_SQL_HISTORY` or `~/.allegro_sql_history`,
//! as psql keeps `~/.psql_history`), plain stdin when piped (scripts, tests).

use std::io::{BufRead, StdinLock};
use std::path::PathBuf;

use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

/// What the next read gave.
pub enum Read {
    /// A line of input.
    Line(String),
    /// Ctrl-C: drop the statement being typed.
    Cancel,
    /// End of input (Ctrl-D, or the end of a pipe).
    End,
}

/// The statement source.
pub enum Input {
    /// A terminal, through a line editor.
    Editor {
        /// The editor.
        rl: Box<DefaultEditor>,
        /// Where history is kept, when a place is known.
        history: Option<PathBuf>,
    },
    /// Piped input, read as it comes.
    Plain(std::io::Lines<StdinLock<'static>>),
}

/// Where the shell keeps its history.
fn history_file() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ALLEGRO_SQL_HISTORY") {
        return (!p.is_empty()).then(|| PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".allegro_sql_history"))
}

impl Input {
    /// A line editor when `terminal` (falling back to plain stdin if none can start), else
    /// plain stdin.
    pub fn open(terminal: bool) -> Self {
        if terminal && let Ok(mut rl) = DefaultEditor::new() {
            let history = history_file();
            if let Some(p) = &history {
                // A first session has no file yet.
                let _ = rl.load_history(p);
            }
            return Input::Editor {
                rl: Box::new(rl),
                history,
            };
        }
        Input::Plain(std::io::stdin().lock().lines())
    }

    /// The next line, showing `prompt` on a terminal.
    pub fn read(&mut self, prompt: &str) -> Result<Read, String> {
        match self {
            Input::Editor { rl, .. } => match rl.readline(prompt) {
                Ok(line) => Ok(Read::Line(line)),
                Err(ReadlineError::Interrupted) => Ok(Read::Cancel),
                Err(ReadlineError::Eof) => Ok(Read::End),
                Err(e) => Err(format!("reading the terminal: {e}")),
            },
            Input::Plain(lines) => match lines.next() {
                Some(Ok(line)) => Ok(Read::Line(line)),
                Some(Err(e)) => Err(format!("reading stdin: {e}")),
                None => Ok(Read::End),
            },
        }
    }

    /// Keeps `entry` (a whole statement or command) in the history, on disk at once so a
    /// second shell sees it too.
    pub fn remember(&mut self, entry: &str) {
        let Input::Editor { rl, history } = self else {
            return;
        };
        // One line per entry: a statement typed over several lines comes back as one.
        let entry = entry.split_whitespace().collect::<Vec<_>>().join(" ");
        if entry.is_empty() || !rl.add_history_entry(entry.as_str()).unwrap_or(false) {
            return;
        }
        if let Some(p) = history
            && let Err(e) = rl.append_history(p)
        {
            eprintln!("allegro sql: history not kept in {}: {e}", p.display());
            *history = None;
        }
    }
}
