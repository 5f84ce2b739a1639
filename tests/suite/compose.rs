//! The Docker Compose stack and the demo knowledge, checked without Docker:
//! the services of `docker-compose.yml` and their properties, that every
//! Kitbash command the stack runs is a real subcommand, that every variable
//! the compose file interpolates is documented in `.env.example`, that the
//! one image is built once, the Dockerfile, and the demo grains and
//! cartridges under `config/`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use kitbash::layer0::grains_file;
use kitbash::layer0::matching::normalize;
use serde_yaml::Value;

/// The Kitbash services; all run the one image.
const KITBASH_SERVICES: [&str; 5] = [
    "grains_loader",
    "kitbash_core",
    "cartridge_worker",
    "bitnet_worker",
    "kobold_worker",
];

/// The image every Kitbash service runs, and the service that builds it.
const IMAGE: &str = "kitbash:local";
const BUILDER: &str = "grains_loader";
const DOCKERFILE: &str = "docker/Dockerfile";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn compose() -> Value {
    serde_yaml::from_str(&read("docker-compose.yml")).expect("docker-compose.yml parses as YAML")
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose["services"]
        .get(name)
        .unwrap_or_else(|| panic!("docker-compose.yml has no service {name:?}"))
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} should be a string, found {v:?}"))
}

/// A compose list-or-string field (`command`, `entrypoint`, a healthcheck's
/// `test`) as words.
fn words(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => serde_yaml::to_string(other).unwrap().trim().to_string(),
            })
            .collect(),
        Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        Value::Null => Vec::new(),
        other => panic!("expected a list or a string, found {other:?}"),
    }
}

/// A service's `environment`, written as a map or as `NAME=value` items.
fn environment(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Mapping(m) => m
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => serde_yaml::to_string(other).unwrap().trim().to_string(),
                };
                (str_of(k, "an environment name").to_string(), value)
            })
            .collect(),
        Value::Sequence(items) => items
            .iter()
            .map(|i| {
                let item = str_of(i, "an environment item");
                let (k, v) = item.split_once('=').unwrap_or((item, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        Value::Null => BTreeMap::new(),
        other => panic!("environment should be a map or a list, found {other:?}"),
    }
}

/// The condition a service's `depends_on` gives for `on`.
fn depends_condition<'a>(service: &'a Value, on: &str) -> Option<&'a str> {
    service["depends_on"].get(on)?["condition"].as_str()
}

/// Runs the kitbash binary with `args`; returns (success, stdout + stderr).
fn kitbash(args: &[String]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kitbash"))
        .args(args)
        .env_remove("KITBASH_CONFIG")
        .output()
        .expect("run the kitbash binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Asserts that `kitbash <args> --help` succeeds: the arguments name a
/// real subcommand and clap accepts its options.
fn assert_real_subcommand(args: &[String], what: &str) {
    assert!(!args.is_empty(), "{what}: no command");
    let mut with_help = args.to_vec();
    with_help.push("--help".into());
    let (ok, out) = kitbash(&with_help);
    assert!(
        ok,
        "{what}: `kitbash {}` is not a command kitbash accepts:\n{out}",
        with_help.join(" ")
    );
}

#[test]
fn every_service_is_there() {
    let c = compose();
    for name in ["redis"]
        .into_iter()
        .chain(KITBASH_SERVICES.iter().copied())
    {
        service(&c, name);
    }
}

#[test]
fn redis_persists_to_a_named_volume_and_reports_health() {
    let c = compose();
    let redis = service(&c, "redis");
    assert!(
        str_of(&redis["image"], "redis image").starts_with("redis:7"),
        "redis image: {:?}",
        redis["image"]
    );
    let command = words(&redis["command"]);
    let aof = command.iter().position(|w| w == "--appendonly");
    assert!(
        aof.is_some_and(|i| command.get(i + 1).map(String::as_str) == Some("yes")),
        "redis should run with --appendonly yes: {command:?}"
    );
    let test = words(&redis["healthcheck"]["test"]).join(" ");
    assert!(
        test.contains("redis-cli") && test.contains("ping"),
        "redis healthcheck: {test}"
    );
    let volumes = redis["volumes"].as_sequence().expect("redis has volumes");
    let data = volumes
        .iter()
        .filter_map(|v| v.as_str())
        .find_map(|v| v.strip_suffix(":/data"))
        .expect("a volume mounted on /data");
    assert!(
        !data.starts_with('.') && !data.starts_with('/'),
        "/data should be a named volume, not a bind mount: {data:?}"
    );
    assert!(
        c["volumes"].get(data).is_some(),
        "volume {data:?} should be declared under the top-level volumes"
    );
    for port in redis["ports"].as_sequence().into_iter().flatten() {
        let port = str_of(port, "a port");
        assert!(
            port.starts_with("127.0.0.1:"),
            "redis port {port} should be on loopback only"
        );
    }
}

#[test]
fn the_daemon_listens_in_its_container_publishes_on_loopback_and_checks_ready() {
    let c = compose();
    let core = service(&c, "kitbash_core");
    assert_eq!(words(&core["command"]), ["serve"]);
    let env = environment(core);
    assert_eq!(env["KITBASH_HTTP__LISTEN"], "0.0.0.0:9464");
    let test = words(&core["healthcheck"]["test"]);
    assert!(
        test.iter().any(|w| w.ends_with(":9464/health/ready")),
        "kitbash_core healthcheck should ask /health/ready: {test:?}"
    );
    let ports = core["ports"]
        .as_sequence()
        .expect("kitbash_core publishes a port");
    assert!(!ports.is_empty());
    for port in ports {
        let port = str_of(port, "a port");
        assert!(
            port.starts_with("127.0.0.1:") && port.ends_with(":9464"),
            "kitbash_core port {port} should be 127.0.0.1:<host port>:9464"
        );
    }
}

#[test]
fn kitbash_services_reach_redis_by_name_once_it_is_healthy() {
    let c = compose();
    for name in KITBASH_SERVICES {
        let s = service(&c, name);
        assert_eq!(
            depends_condition(s, "redis"),
            Some("service_healthy"),
            "{name} should wait for a healthy redis"
        );
        assert_eq!(
            environment(s).get("KITBASH_REDIS__URL").map(String::as_str),
            Some("redis://redis:6379/0"),
            "{name} should reach the compose redis"
        );
        let env_file = &s["env_file"];
        assert!(
            !env_file.is_null(),
            "{name} should take its settings from .env"
        );
    }
    let core = service(&c, "kitbash_core");
    assert_eq!(
        depends_condition(core, "grains_loader"),
        Some("service_completed_successfully"),
        "the daemon should start once the demo grains are loaded"
    );
    let loader = service(&c, "grains_loader");
    assert_eq!(loader["restart"].as_str(), Some("no"));
    let load = words(&loader["command"]);
    assert_eq!(load[..2], ["grains", "load"]);
    assert!(
        load.iter().any(|w| w == "/app/config/grains/demo.jsonl"),
        "grains_loader should load the demo grains: {load:?}"
    );
}

#[test]
fn workers_are_configured_for_their_backends() {
    let c = compose();
    let cartridge = words(&service(&c, "cartridge_worker")["command"]);
    assert_eq!(
        cartridge,
        [
            "worker",
            "cartridge",
            "--cartridges",
            "/app/config/cartridges"
        ]
    );

    let bitnet = service(&c, "bitnet_worker");
    assert_eq!(words(&bitnet["command"]), ["worker", "bitnet"]);
    assert!(
        environment(bitnet)["KITBASH_WORKERS__BITNET__URL"]
            .starts_with("${KITBASH_WORKERS__BITNET__URL:-"),
        "the bitnet URL should come from .env with a default"
    );
    let hosts = words(&bitnet["extra_hosts"]);
    assert!(
        hosts
            .iter()
            .any(|h| h == "host.docker.internal:host-gateway"),
        "bitnet_worker should reach the host: {hosts:?}"
    );

    let kobold = service(&c, "kobold_worker");
    assert_eq!(words(&kobold["command"]), ["worker", "llm"]);
    assert_eq!(words(&kobold["profiles"]), ["kobold"]);
    let env = environment(kobold);
    assert_eq!(env["KITBASH_WORKERS__LLM__BACKEND"], "kobold");
    assert!(env["KITBASH_WORKERS__LLM__URL"].starts_with("${KITBASH_WORKERS__LLM__URL:-"));

    for name in [
        "redis",
        "grains_loader",
        "kitbash_core",
        "cartridge_worker",
        "bitnet_worker",
    ] {
        assert!(
            service(&c, name)["profiles"].is_null(),
            "{name} should start with a plain `docker compose up`"
        );
    }
}

#[test]
fn every_kitbash_command_in_the_stack_is_a_real_subcommand() {
    let c = compose();
    let services = c["services"].as_mapping().expect("services is a map");
    let mut checked = BTreeSet::new();
    for (name, s) in services {
        let name = str_of(name, "a service name");
        let entrypoint = words(&s["entrypoint"]);
        let ours = s["image"].as_str() == Some(IMAGE);
        if !ours && entrypoint.first().map(String::as_str) != Some("kitbash") {
            continue;
        }
        // The image's ENTRYPOINT is `kitbash`, so a command is its arguments.
        let mut args = words(&s["command"]);
        if !entrypoint.is_empty() {
            args = entrypoint[1..].iter().cloned().chain(args).collect();
        }
        assert_real_subcommand(&args, &format!("service {name}"));
        checked.insert(name.to_string());
    }
    let expected: BTreeSet<String> = KITBASH_SERVICES.iter().map(|n| n.to_string()).collect();
    assert_eq!(checked, expected);
}

/// Compose builds the image once: one service has the `build` section and
/// names the image; every other Kitbash service runs that image, never
/// pulls it (it is on no registry), and depends on the builder, so that
/// starting any one service alone builds the image first.
#[test]
fn the_image_is_built_once_and_shared() {
    let c = compose();
    let services = c["services"].as_mapping().expect("services is a map");
    let builders: Vec<&str> = services
        .iter()
        .filter(|(_, s)| s.get("build").is_some())
        .map(|(n, _)| str_of(n, "a service name"))
        .collect();
    assert_eq!(builders, [BUILDER], "exactly one service builds");
    let b = service(&c, BUILDER);
    assert_eq!(b["image"].as_str(), Some(IMAGE));
    assert_eq!(b["build"]["context"].as_str(), Some("."), "from the root");
    assert_eq!(b["build"]["dockerfile"].as_str(), Some(DOCKERFILE));
    assert!(root().join(DOCKERFILE).is_file(), "{DOCKERFILE} exists");
    for name in KITBASH_SERVICES.iter().filter(|n| **n != BUILDER) {
        let s = service(&c, name);
        assert_eq!(s["image"].as_str(), Some(IMAGE), "{name} runs {IMAGE}");
        assert_eq!(
            s["pull_policy"].as_str(),
            Some("never"),
            "{name} never pulls {IMAGE}"
        );
        assert!(
            depends_condition(s, BUILDER).is_some(),
            "{name} depends on {BUILDER}, which builds its image"
        );
    }
}

/// Every `${NAME…}` and `$NAME` in the string values of `v`.
fn interpolated(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(i) = rest.find('$') {
                rest = &rest[i + 1..];
                if let Some(r) = rest.strip_prefix('$') {
                    rest = r; // `$$` is a literal dollar
                    continue;
                }
                let r = rest.strip_prefix('{').unwrap_or(rest);
                let name: String = r
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        }
        Value::Sequence(items) => items.iter().for_each(|i| interpolated(i, out)),
        Value::Mapping(m) => m.values().for_each(|i| interpolated(i, out)),
        Value::Tagged(t) => interpolated(&t.value, out),
        _ => {}
    }
}

#[test]
fn every_interpolated_variable_is_documented_in_env_example() {
    let mut vars = BTreeSet::new();
    interpolated(&compose(), &mut vars);
    assert!(
        vars.len() >= 4,
        "expected the ports and model server URLs to be configurable: {vars:?}"
    );
    let example = read(".env.example");
    let documented: HashSet<&str> = example
        .lines()
        .map(|l| l.trim().trim_start_matches('#').trim_start())
        .filter_map(|l| l.split_once('=').map(|(name, _)| name))
        .collect();
    let missing: Vec<&String> = vars
        .iter()
        .filter(|v| !documented.contains(v.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "docker-compose.yml uses {missing:?}, which .env.example does not document (as `NAME=` or `# NAME=`)"
    );
}

/// The instructions of a Dockerfile: (keyword in capitals, the rest), with
/// continuation lines joined and comments dropped.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(part) = line.strip_suffix('\\') {
            current.push_str(part);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        let (keyword, rest) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        out.push((keyword.to_ascii_uppercase(), rest.trim().to_string()));
        current.clear();
    }
    out
}

#[test]
fn dockerfiles_build_a_non_root_image_with_the_demo_config() {
    let c = compose();
    let core_check = words(&service(&c, "kitbash_core")["healthcheck"]["test"]);
    {
        let rel = DOCKERFILE;
        let text = read(rel);
        let ins = instructions(&text);
        let of = |k: &str| -> Vec<&str> {
            ins.iter()
                .filter(|(kw, _)| kw == k)
                .map(|(_, r)| r.as_str())
                .collect()
        };
        let froms = of("FROM");
        assert!(
            froms.len() >= 2 && froms[0].starts_with("rust:"),
            "{rel}: a rust build stage, then a runtime stage: {froms:?}"
        );
        assert!(
            froms.last().unwrap().starts_with("debian:bookworm-slim"),
            "{rel}: the runtime stage is debian:bookworm-slim: {froms:?}"
        );
        let user = of("USER").last().copied().unwrap_or("root");
        let user = user.split(':').next().unwrap();
        assert!(
            user != "root" && user != "0",
            "{rel}: the image should run as a non-root USER, found {user:?}"
        );
        let copies_config = of("COPY").iter().any(|r| {
            let parts: Vec<&str> = r.split_whitespace().collect();
            !r.starts_with("--from")
                && parts.len() >= 2
                && parts[..parts.len() - 1]
                    .iter()
                    .any(|p| p.trim_end_matches('/') == "config")
        });
        assert!(
            copies_config,
            "{rel}: should COPY the config/ directory into the image"
        );
        assert_eq!(
            of("ENTRYPOINT"),
            [r#"["kitbash"]"#],
            "{rel}: ENTRYPOINT [\"kitbash\"]"
        );
        let cmd = of("CMD");
        let cmd = cmd.last().unwrap_or_else(|| panic!("{rel}: no CMD"));
        let args: Vec<String> = serde_json::from_str(cmd)
            .unwrap_or_else(|e| panic!("{rel}: CMD should be a JSON list ({e}): {cmd}"));
        assert_real_subcommand(&args, &format!("{rel} CMD"));
        let runs = of("RUN").join("\n");
        if core_check.first().map(String::as_str) == Some("CMD")
            && core_check.get(1).map(String::as_str) == Some("curl")
        {
            assert!(
                runs.contains(" curl"),
                "{rel}: the compose health check runs curl, so the image must install it"
            );
        }
    }
    let ignore = read(".dockerignore");
    for entry in ["target/", ".git", ".kitbash/", ".env"] {
        assert!(
            ignore.lines().any(|l| l.trim() == entry),
            ".dockerignore should list {entry}"
        );
    }
}

#[test]
fn demo_grains_parse_cleanly_and_answer_the_first_question() {
    let path = root().join("config/grains/demo.jsonl");
    let parsed = grains_file::read(&path).expect("read the demo grains");
    let errors: Vec<String> = parsed.errors.iter().map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "bad demo grains: {errors:#?}");
    assert!(
        (300..=500).contains(&parsed.grains.len()),
        "expected 300 to 500 demo grains, found {}",
        parsed.grains.len()
    );
    let by_key: BTreeMap<String, (&str, &str)> = parsed
        .grains
        .iter()
        .map(|p| {
            (
                normalize(&p.grain.question).into_string(),
                (p.grain.fact_id.as_str(), p.grain.answer.as_str()),
            )
        })
        .collect();
    let hit = |q: &str| by_key.get(normalize(q).as_str()).copied();
    // Questions config/README.md says layer0 answers.
    assert_eq!(
        hit("What is the capital of Kenya?"),
        Some(("capital-ke", "Nairobi"))
    );
    assert_eq!(
        hit("what's the currency of japan"),
        Some(("currency-jp", "Japanese Yen (JPY)"))
    );
    assert_eq!(
        hit("What is the chemical symbol of gold?"),
        Some(("element-au", "Au"))
    );
    // Questions it says go on to the cartridges.
    for q in [
        "What is the population of Kenya?",
        "Which group is gold in?",
        "What is the capital of Tuvalu?",
        "Which countries border Kenya?",
        "What is the symbol for gold?",
    ] {
        assert_eq!(hit(q), None, "{q:?} should not be answered at layer0");
    }
}

/// One cartridge's facts: (id, text), checked line by line.
fn cartridge_facts(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let name = path.display();
    let mut facts = Vec::new();
    let mut ids = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{name}:{}", i + 1);
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{at}: bad JSON: {e}"));
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("{at}: not an object"));
        let field = |k: &str| -> String {
            let s = obj
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_else(|| panic!("{at}: {k:?} should be a string"));
            assert!(!s.trim().is_empty(), "{at}: {k:?} is empty");
            s.to_string()
        };
        let (id, text) = (field("id"), field("text"));
        if let Some(source) = obj.get("source") {
            assert!(source.is_string(), "{at}: source should be a string");
        }
        for k in obj.keys() {
            assert!(
                ["id", "text", "source"].contains(&k.as_str()),
                "{at}: unexpected field {k:?}"
            );
        }
        assert!(ids.insert(id.clone()), "{at}: id {id:?} repeats");
        facts.push((id, text));
    }
    facts
}

#[test]
fn demo_cartridges_hold_thousands_of_valid_facts() {
    let dir = root().join("config/cartridges");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "expected several cartridges: {files:?}");
    let mut total = 0;
    let mut all: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for f in &files {
        let facts = cartridge_facts(f);
        assert!(!facts.is_empty(), "{} is empty", f.display());
        total += facts.len();
        let stem = f.file_stem().unwrap().to_string_lossy().into_owned();
        all.insert(stem, facts.into_iter().collect());
    }
    assert!(
        (2000..=5000).contains(&total),
        "expected 2,000 to 5,000 cartridge facts, found {total}"
    );
    // The facts behind config/README.md's layer2 examples.
    let fact = |cartridge: &str, id: &str| -> &str {
        all.get(cartridge)
            .and_then(|c| c.get(id))
            .unwrap_or_else(|| panic!("no fact {cartridge}#{id}"))
    };
    assert!(fact("countries", "ke-population").starts_with("Kenya has a population of"));
    assert!(fact("countries", "tv-capital").contains("Funafuti"));
    assert!(fact("elements", "au-group").contains("group 11"));
    assert!(fact("borders", "ke-borders").contains("Uganda"));
}

/// The words of one shell command line: quotes removed, stopping at a
/// comment or at the first pipe, redirection, `&` or `;`.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let (mut word, mut quote, mut started) = (String::new(), None::<char>, false);
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (None, '#' | '|' | '<' | '>' | '&' | ';') if !started || word.is_empty() => break,
            (None, c) if c.is_whitespace() => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (None, c) => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}

/// The `sh` and `console` code blocks of a Markdown file, line by line.
fn shell_lines(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in markdown.lines() {
        let fence = line.trim_start();
        if let Some(lang) = fence.strip_prefix("```") {
            inside = !inside && matches!(lang.trim(), "sh" | "console");
            continue;
        }
        if inside {
            out.push(line.trim().trim_start_matches("$ ").to_string());
        }
    }
    out
}

/// Every `kitbash` command README.md and the pages of docs/ show is one
/// the binary accepts (subcommand and flags, checked with `--help`), and
/// README calls it by the path the set-up builds, `./target/release/kitbash`,
/// so each command works verbatim after the two set-up commands.
#[test]
fn every_documented_kitbash_command_is_accepted_and_readme_ones_run_verbatim() {
    let mut pages = vec![("README.md".to_string(), read("README.md"))];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            let rel = format!("docs/{}", path.file_name().unwrap().to_string_lossy());
            pages.push((rel.clone(), read(&rel)));
        }
    }
    let mut checked = 0;
    for (page, text) in &pages {
        for line in shell_lines(text) {
            let words: Vec<String> = shell_words(&line)
                .into_iter()
                .skip_while(|w| w.contains('=') && !w.starts_with('-'))
                .collect();
            let Some(program) = words.first() else {
                continue;
            };
            let is_readme = page == "README.md";
            if is_readme && program == "kitbash" {
                panic!(
                    "README.md runs `kitbash` from PATH, which the set-up does not provide: {line}"
                );
            }
            let ours =
                program == "./target/release/kitbash" || (!is_readme && program == "kitbash");
            if !ours || words.len() < 2 {
                continue;
            }
            assert_real_subcommand(&words[1..], &format!("{page}: {line}"));
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} documented commands found");
}

#[test]
fn shell_words_split_like_a_shell() {
    assert_eq!(
        shell_words(r#"./k query "What is it?"   # a comment"#),
        ["./k", "query", "What is it?"]
    );
    assert_eq!(
        shell_words("k stats --json | head"),
        ["k", "stats", "--json"]
    );
    assert_eq!(shell_words("k query < q.txt"), ["k", "query"]);
    assert_eq!(shell_words("A=1 k 'x y'"), ["A=1", "k", "x y"]);
}
