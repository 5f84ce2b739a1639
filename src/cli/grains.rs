//! `kitbash grains`: manage layer0's grains (load, list, get, forget,
//! count, match).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::Blackboard;
use crate::aliases::Aliases;
use crate::config::{LayerKind, Settings};
use crate::layer0::grains::{GrainMatch, IfExists, StoreStatus};
use crate::layer0::grains_file::{self, Location};
use crate::layer0::matching::normalize;

/// Arguments of `kitbash grains`.
#[derive(Debug, Args)]
pub struct GrainsArgs {
    /// What to do with the grains.
    #[command(subcommand)]
    pub command: GrainsCommand,
}

/// The `kitbash grains` subcommands.
#[derive(Debug, Subcommand)]
pub enum GrainsCommand {
    /// Load grains from JSONL files (one object a line) or YAML files (.yaml/.yml, a list).
    ///
    /// Bad entries are reported on stderr as `file:line: reason`; the good
    /// ones still load. Exit status: 0 all loaded, 1 some entries were bad,
    /// 2 a file could not be read or Redis could not be reached.
    Load(LoadArgs),
    /// List grains (sorted by fact id; with --crystallized, the crystallised
    /// ones, the one expiring soonest first).
    List(ListArgs),
    /// Show one grain (with its provenance, when crystallised).
    Get(GetArgs),
    /// Delete grains and their layer0 index entries, each with a
    /// `grain_forgotten` event (`rm` is the same command).
    #[command(visible_alias = "rm")]
    Forget(RmArgs),
    /// Print the number of grains.
    Count,
    /// Show a question's match key and what layer0 would answer.
    Match(MatchArgs),
}

/// Arguments of `kitbash grains load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Grains files: `.yaml`/`.yml` for YAML, anything else is JSONL.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Overwrite grains whose fact id exists already (by default they are kept).
    #[arg(long)]
    pub replace: bool,
}

/// Arguments of `kitbash grains list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Most grains to list.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// One JSON object a line (loaded grains load again with `kitbash
    /// grains load`).
    #[arg(long)]
    pub json: bool,
    /// Only crystallised grains, the one expiring soonest (evicted first) first.
    #[arg(long)]
    pub crystallized: bool,
}

/// Arguments of `kitbash grains get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The grain's id.
    pub fact_id: String,
    /// Print the grain as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `kitbash grains forget` (and `rm`).
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Ids of the grains to delete.
    #[arg(required = true, value_name = "FACT_ID")]
    pub fact_ids: Vec<String>,
}

/// Arguments of `kitbash grains match`.
#[derive(Debug, Args)]
pub struct MatchArgs {
    /// The question, as a user would ask it.
    pub question: String,
    /// Print JSON: match_key, layer, min_confidence, hit, grain.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `kitbash grains` command; returns the exit status (2 for a bad
/// configuration or an unreachable Redis).
pub fn run(file: Option<PathBuf>, args: GrainsArgs) -> ExitCode {
    let settings = match super::common::settings(file) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kitbash: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        let bb = match connect(&settings).await {
            Ok(bb) => bb,
            Err(msg) => {
                eprintln!("kitbash: {msg}");
                return ExitCode::from(2);
            }
        };
        let result = match args.command {
            GrainsCommand::Load(a) => load(&bb, a).await,
            GrainsCommand::List(a) => list(&bb, a).await,
            GrainsCommand::Get(a) => get(&bb, a).await,
            GrainsCommand::Forget(a) => forget(&bb, a).await,
            GrainsCommand::Count => count(&bb).await,
            GrainsCommand::Match(a) => matches(&bb, &settings, a).await,
        };
        result.unwrap_or_else(|e| {
            eprintln!("kitbash: {e}");
            ExitCode::from(2)
        })
    })
}

async fn connect(settings: &Settings) -> Result<Blackboard, String> {
    let connector =
        crate::store::connection::Connector::new(&settings.redis).map_err(|e| e.to_string())?;
    let conn = connector.shared().await.map_err(|e| {
        format!("{e}; is redis-server running, and are redis.url / REDIS_URL right?")
    })?;
    Ok(Blackboard::from_settings(conn, settings))
}

type CmdResult = Result<ExitCode, crate::BlackboardError>;

/// `file:line: ` (or `file: item N: `) before a message about one entry.
fn at(file: &Path, location: &Location) -> String {
    let file = file.display();
    match (location.line, location.item) {
        (Some(line), Some(item)) => format!("{file}:{line}: item {item}: "),
        (Some(line), None) => format!("{file}:{line}: "),
        (None, Some(item)) => format!("{file}: item {item}: "),
        (None, None) => format!("{file}: "),
    }
}

async fn load(bb: &Blackboard, args: LoadArgs) -> CmdResult {
    let if_exists = if args.replace {
        IfExists::Replace
    } else {
        IfExists::Keep
    };
    let (mut unreadable, mut bad) = (false, false);
    for file in &args.files {
        let parsed = match grains_file::read(file) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("kitbash: {e}");
                unreadable = true;
                continue;
            }
        };
        for e in &parsed.errors {
            eprintln!("{}{}", at(file, &e.location), e.reason);
        }
        bad |= !parsed.errors.is_empty();
        let grains: Vec<_> = parsed.grains.iter().map(|p| p.grain.clone()).collect();
        let results = bb.store_grains(&grains, if_exists).await?;
        let (mut stored, mut kept, mut failed) = (0usize, 0usize, 0usize);
        for (parsed, result) in parsed.grains.iter().zip(results) {
            let at = at(file, &parsed.location);
            match result {
                Ok(s) if s.status == StoreStatus::Kept => kept += 1,
                Ok(s) => {
                    stored += 1;
                    if let Some(other) = s.displaced {
                        eprintln!(
                            "{at}warning: grain {:?} has the same match key ({:?}) as grain {other:?}, which layer0 no longer answers",
                            s.fact_id,
                            s.match_key.as_str()
                        );
                    }
                }
                // The server refused the write (a cluster node's MOVED, a
                // replica's READONLY, a missing permission): not the line's
                // fault, and every other line would get the same answer.
                Err(crate::BlackboardError::Redis(e)) => {
                    eprintln!(
                        "kitbash: Redis refused to store the grains of {} ({e}); this is the server \
                         or its configuration, not the file. Nothing more was loaded ({stored} stored before).",
                        file.display()
                    );
                    return Ok(ExitCode::from(2));
                }
                Err(e) => {
                    eprintln!("{at}{e}");
                    failed += 1;
                }
            }
        }
        bad |= failed > 0;
        let mut summary = format!("{}: loaded {stored} grains", file.display());
        if kept > 0 {
            summary += &format!(", kept {kept} existing (use --replace to overwrite them)");
        }
        if parsed.repeated > 0 {
            summary += &format!(
                ", {} repeated entries (same question and answer) loaded once",
                parsed.repeated
            );
        }
        let n_bad = parsed.errors.len() + failed;
        if n_bad > 0 {
            summary += &format!(", {n_bad} bad entries");
        }
        println!("{summary}");
    }
    Ok(if unreadable {
        ExitCode::from(2)
    } else if bad {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn list(bb: &Blackboard, args: ListArgs) -> CmdResult {
    let grains = if args.crystallized {
        bb.list_crystallized(args.limit).await?
    } else {
        bb.list_grains(args.limit).await?
    };
    for g in &grains {
        if args.json {
            println!(
                "{}",
                serde_json::to_string(g).expect("a Grain always serializes")
            );
        } else {
            let origin = match &g.crystallized {
                Some(c) => format!("\tcrystallised by {} until {}", c.layer, c.expires_at),
                None => String::new(),
            };
            println!(
                "{}\t{}\t{} hits\t{} → {}{origin}",
                g.fact_id, g.confidence, g.hits, g.question, g.answer
            );
        }
    }
    let total = if args.crystallized {
        bb.count_crystallized().await?
    } else {
        bb.count_grains().await?
    };
    if (grains.len() as u64) < total && grains.len() == args.limit {
        eprintln!(
            "(listed {} of {total} grains; use --limit to see more)",
            grains.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn get(bb: &Blackboard, args: GetArgs) -> CmdResult {
    let Some(g) = bb.get_grain(&args.fact_id).await? else {
        eprintln!(
            "kitbash: no grain {:?}; `kitbash grains list` shows the ids",
            args.fact_id
        );
        return Ok(ExitCode::from(1));
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&g).expect("a Grain always serializes")
        );
    } else {
        println!("fact_id:    {}", g.fact_id);
        println!("question:   {}", g.question);
        println!("answer:     {}", g.answer);
        println!("confidence: {}", g.confidence);
        println!("source:     {}", g.source.as_deref().unwrap_or("-"));
        if let Some(fact) = &g.from_fact {
            println!("from fact:  {fact}");
        }
        println!("hits:       {}", g.hits);
        println!("created_at: {}", g.created_at.as_deref().unwrap_or("-"));
        println!("updated_at: {}", g.updated_at.as_deref().unwrap_or("-"));
        println!("match key:  {}", normalize(&g.question));
        match &g.crystallized {
            None => println!("origin:     loaded"),
            Some(c) => {
                println!("origin:     crystallised from an answer of {}", c.layer);
                println!("worker:     {}", c.worker.as_deref().unwrap_or("-"));
                println!("query:      {}", c.query_id);
                println!("expires_at: {} (hits do not extend it)", c.expires_at);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn forget(bb: &Blackboard, args: RmArgs) -> CmdResult {
    let mut removed = 0;
    let mut missing = false;
    for id in &args.fact_ids {
        if bb
            .forget_grain(id, "forgotten by kitbash grains forget")
            .await?
        {
            removed += 1;
        } else {
            eprintln!("kitbash: no grain {id:?}");
            missing = true;
        }
    }
    println!("removed {removed} grains");
    Ok(if missing {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn count(bb: &Blackboard) -> CmdResult {
    println!("{}", bb.count_grains().await?);
    Ok(ExitCode::SUCCESS)
}

/// The grain layer's name and threshold (`layer0`, 0.9 by default).
fn grain_layer(settings: &Settings) -> (String, f64) {
    settings
        .layers
        .iter()
        .find(|(_, l)| l.kind == LayerKind::Grain)
        .map(|(name, l)| (name.clone(), l.min_confidence))
        .unwrap_or_else(|| ("layer0".into(), 0.9))
}

async fn matches(bb: &Blackboard, settings: &Settings, args: MatchArgs) -> CmdResult {
    let key = normalize(&args.question);
    let aliases = Aliases::load_logged(&settings.knowledge.aliases);
    let found: Option<GrainMatch> = bb.lookup_grain_with(&args.question, &aliases).await?;
    // Found by the second stage (aliases, attribute fillers), not the key.
    let second_stage = found
        .as_ref()
        .is_some_and(|m| normalize(&m.question) != key);
    let (layer, min) = grain_layer(settings);
    let hit = found.as_ref().is_some_and(|m| m.confidence >= min);
    if args.json {
        let out = serde_json::json!({
            "question": args.question,
            "match_key": key.as_str(),
            "layer": layer,
            "min_confidence": min,
            "hit": hit,
            "second_stage": second_stage,
            "grain": found,
        });
        println!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    if key.is_empty() {
        println!("match key: (empty: no content word, so {layer} never answers this)");
        return Ok(ExitCode::SUCCESS);
    }
    println!("match key: {key}");
    if let Some(m) = found.as_ref().filter(|_| second_stage) {
        println!(
            "second stage: found through aliases or attribute fillers as {:?} (match key {})",
            m.question,
            normalize(&m.question)
        );
    }
    match found {
        None => println!("{layer}:    miss (no grain's question has this match key)"),
        Some(m) if hit => println!(
            "{layer}:    hit {} (confidence {} ≥ {min}): {}",
            m.fact_id, m.confidence, m.answer
        ),
        Some(m) => println!(
            "{layer}:    miss: grain {} matches but its confidence {} is below layers.{layer}.min_confidence = {min}",
            m.fact_id, m.confidence
        ),
    }
    Ok(ExitCode::SUCCESS)
}
