//! `kitbash repl`: an interactive client.
//!
//! Redis mode (default) enqueues through the queue and waits on the
//! completion signal, like any client. Direct mode (`:direct`) runs the
//! cascade in this process against the same Redis and workers, for
//! debugging without a daemon.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{DefaultEditor, Editor};

use super::common;
use super::show::{self, Paint};
use crate::client::Client;
use crate::config::{LayerKind, Settings};
use crate::daemon::direct::DirectRunner;
use crate::store::blackboard::Blackboard;

/// Arguments of `kitbash repl`.
#[derive(Debug, Args)]
pub struct ReplArgs {
    /// Start in direct mode (the cascade in this process).
    #[arg(long)]
    pub direct: bool,
    /// Seconds to wait for each answer in Redis mode.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
}

const HELP: &str = "\
Type a question to ask it. Commands:
  :timeline [id]   events of the last (or a given) query, with relative times
  :stats           per-layer attempts, hit rate, p50/p95/p99
  :health          live daemons and workers per layer
  :grains <word>   grains whose question contains <word>
  :wrong [id]      mark the last (or a given) answer wrong: its grain goes and
                   the question stops crystallising (kitbash feedback)
  :priority [lane] the priority of the next questions (critical, high,
                   normal, low); without a lane, the current one
  :direct          run the cascade in this process (no daemon needed)
  :redis           go through the queue and a daemon (default)
  :help            this text
  :quit            leave (also quit, exit, Ctrl-D); Ctrl-C cancels a wait
Lines you type are kept in ~/.kitbash_history.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Redis,
    Direct,
}

/// Runs the REPL until `:quit` or end of input.
pub fn run(file: Option<PathBuf>, args: ReplArgs) -> ExitCode {
    let (settings, rt) = match common::setup(file) {
        Ok(x) => x,
        Err(c) => return c,
    };
    rt.block_on(repl(settings, args))
}

struct Session {
    settings: Settings,
    client: Client,
    direct: Option<DirectRunner>,
    mode: Mode,
    last_id: Option<String>,
    timeout: Duration,
    paint: Paint,
}

async fn repl(settings: Settings, args: ReplArgs) -> ExitCode {
    let timeout = Duration::from_secs_f64(args.timeout.max(0.01));
    let client = match Client::connect(&settings, timeout).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kitbash repl: {e}");
            return ExitCode::from(2);
        }
    };
    let mut s = Session {
        settings,
        client,
        direct: None,
        mode: Mode::Redis,
        last_id: None,
        timeout,
        paint: Paint {
            color: common::color(),
        },
    };
    if args.direct {
        s.switch(Mode::Direct).await;
    }
    let mut editor: Editor<(), FileHistory> = match DefaultEditor::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("kitbash repl: cannot set up line editing: {e}");
            return ExitCode::from(2);
        }
    };
    let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kitbash_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    println!(
        "kitbash repl — {} mode. :help for commands.",
        mode_name(s.mode)
    );
    loop {
        let prompt = match s.mode {
            Mode::Redis => "kitbash> ",
            Mode::Direct => "kitbash(direct)> ",
        };
        // Line editing blocks; it runs off the async threads.
        let (ed, line) = match tokio::task::spawn_blocking(move || {
            let line = editor.readline(prompt);
            (editor, line)
        })
        .await
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("kitbash repl: {e}");
                return ExitCode::from(2);
            }
        };
        editor = ed;
        match line {
            Ok(line) => {
                let line = line.trim().to_string();
                if line.is_empty() {
                    continue;
                }
                let _ = editor.add_history_entry(line.as_str());
                if !s.handle(&line).await {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("kitbash repl: {e}");
                break;
            }
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    if let Some(d) = s.direct.take() {
        d.stop().await;
    }
    println!("bye");
    ExitCode::SUCCESS
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Redis => "redis",
        Mode::Direct => "direct",
    }
}

impl Session {
    fn bb(&self) -> &Blackboard {
        self.client.blackboard()
    }

    /// Handles one line; false to leave.
    async fn handle(&mut self, line: &str) -> bool {
        let (cmd, rest) = match line.split_once(char::is_whitespace) {
            Some((c, r)) => (c, r.trim()),
            None => (line, ""),
        };
        match cmd {
            // A bare `quit` or `exit` is never a question worth asking.
            ":quit" | ":q" | ":exit" | "quit" | "exit" if rest.is_empty() => return false,
            ":help" | ":h" | ":?" => println!("{HELP}"),
            ":direct" => self.switch(Mode::Direct).await,
            ":redis" => self.switch(Mode::Redis).await,
            ":timeline" | ":t" => self.timeline(rest).await,
            ":stats" => self.stats().await,
            ":health" => self.health().await,
            ":grains" => self.grains(rest).await,
            ":wrong" => self.wrong(rest).await,
            ":priority" => self.priority(rest),
            c if c.starts_with(':') => println!("unknown command {c}; :help lists them"),
            _ => self.ask(line).await,
        }
        true
    }

    fn priority(&mut self, rest: &str) {
        if rest.is_empty() {
            println!("priority {}", self.client.priority());
            return;
        }
        match rest.parse::<crate::store::lanes::Lane>() {
            Ok(lane) => {
                self.client.set_priority(lane);
                println!("priority {lane} for the next questions (redis mode)");
            }
            Err(e) => println!("{e}"),
        }
    }

    async fn switch(&mut self, mode: Mode) {
        if mode == Mode::Direct && self.direct.is_none() {
            match DirectRunner::start(self.settings.clone()).await {
                Ok(d) => self.direct = Some(d),
                Err(e) => {
                    println!("cannot start direct mode: {e}");
                    return;
                }
            }
        }
        self.mode = mode;
        println!("{} mode", mode_name(mode));
    }

    async fn ask(&mut self, text: &str) {
        let outcome = match (self.mode, &self.direct) {
            (Mode::Direct, Some(d)) => d.ask(text).await.map_err(|e| e.to_string()),
            _ => {
                let q = match self
                    .client
                    .submit(text, serde_json::json!({"client": "repl"}))
                    .await
                {
                    Ok(q) => q,
                    Err(e) => {
                        println!("{}", self.paint.red(&e.to_string()));
                        return;
                    }
                };
                self.last_id = Some(q.query_id.clone());
                let timeout = self.timeout;
                tokio::select! {
                    r = self.client.wait(&q.query_id, timeout) => r.map_err(|e| e.to_string()),
                    _ = tokio::signal::ctrl_c() => {
                        println!("cancelled the wait; the query goes on (:timeline {})", q.query_id);
                        return;
                    }
                }
            }
        };
        match outcome {
            Ok(state) => {
                self.last_id = Some(state.query_id.clone());
                let threshold = |l: &str| self.settings.layers.get(l).map(|l| l.min_confidence);
                println!("{}", show::answer(&state, self.paint, &threshold));
            }
            Err(e) => println!("{}", self.paint.red(&e)),
        }
    }

    async fn wrong(&self, id: &str) {
        let id = match (id.is_empty(), &self.last_id) {
            (false, _) => id.to_string(),
            (true, Some(last)) => last.clone(),
            (true, None) => {
                println!(":wrong <id> (no query asked yet)");
                return;
            }
        };
        match super::feedback::mark_wrong(self.bb(), &self.settings, &id, false, None).await {
            Ok(text) => println!("{text}"),
            Err(e) => println!("{}", self.paint.red(&e.to_string())),
        }
    }

    async fn timeline(&self, id: &str) {
        let id = if id.is_empty() {
            match &self.last_id {
                Some(id) => id.clone(),
                None => {
                    println!("no query yet; :timeline <id>");
                    return;
                }
            }
        } else {
            id.to_string()
        };
        match self.bb().timeline(&id, 100_000).await {
            Ok(events) => println!("{}", show::timeline(&events, self.paint)),
            Err(e) => println!("{}", self.paint.red(&e.to_string())),
        }
    }

    async fn stats(&self) {
        let mut rows = Vec::new();
        for (layer, _) in self.settings.layers_in_order() {
            match self.bb().layer_stats(layer, Duration::from_secs(300)).await {
                Ok(r) => rows.push(r),
                Err(e) => {
                    println!("{}", self.paint.red(&e.to_string()));
                    return;
                }
            }
        }
        println!("{}", show::stats(&rows, self.paint));
    }

    async fn health(&self) {
        let layers: Vec<String> = self
            .settings
            .layers
            .iter()
            .filter(|(_, l)| l.kind == LayerKind::Worker && l.enabled)
            .map(|(n, _)| n.clone())
            .collect();
        match self.bb().list_health().await {
            Ok(h) => println!("{}", show::health(&h, &layers, self.paint)),
            Err(e) => println!("{}", self.paint.red(&e.to_string())),
        }
    }

    async fn grains(&self, word: &str) {
        if word.is_empty() {
            println!(":grains <word>");
            return;
        }
        let needle = word.to_lowercase();
        match self.bb().list_grains(10_000).await {
            Ok(grains) => {
                let found: Vec<_> = grains
                    .iter()
                    .filter(|g| g.question.to_lowercase().contains(&needle))
                    .collect();
                for g in found.iter().take(20) {
                    println!(
                        "{}  {} → {}",
                        self.paint.dim(&g.fact_id),
                        g.question,
                        g.answer
                    );
                }
                if found.len() > 20 {
                    println!("… and {} more", found.len() - 20);
                }
                if found.is_empty() {
                    println!("no grain mentions {word:?}");
                }
            }
            Err(e) => println!("{}", self.paint.red(&e.to_string())),
        }
    }
}
