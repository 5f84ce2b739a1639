use std::path::PathBuf;
use std::process::Command;

use kitbash::config::{ConfigError, ConfigSources, LayerKind, load_from};

fn env(vars: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
    Some(
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
    fn sources(
        &self,
        yaml: Option<&str>,
        dotenv: Option<&str>,
        vars: &[(&str, &str)],
    ) -> ConfigSources {
        ConfigSources {
            // An empty file, so the checkout's own kitbash_config.yaml is not read.
            file: Some(self.write("kitbash_config.yaml", yaml.unwrap_or("{}\n"))),
            dotenv: Some(match dotenv {
                Some(d) => self.write(".env", d),
                None => self.dir.path().join("absent.env"),
            }),
            env: env(vars),
        }
    }
}

fn invalid(e: ConfigError) -> String {
    match e {
        ConfigError::Invalid(lines) => lines.join("\n"),
        other => panic!("expected Invalid, got {other}"),
    }
}

#[test]
fn defaults_load_and_every_layer_is_valid() {
    let f = Files::new();
    let c = load_from(f.sources(None, None, &[])).unwrap();
    assert_eq!(c.settings, kitbash::Settings::default());
    assert_eq!(c.settings.layers["layer0"].kind, LayerKind::Grain);
    assert_eq!(c.source_of("redis.port"), "built-in default");
}

#[test]
fn decimals_from_env_keep_full_precision() {
    let f = Files::new();
    let c = load_from(f.sources(
        None,
        Some("KITBASH_WORKERS__LLM__FIXED_CONFIDENCE=0.95\n"),
        &[("KITBASH_LAYERS__LAYER0__MIN_CONFIDENCE", "0.9")],
    ))
    .unwrap();
    assert_eq!(c.settings.layers["layer0"].min_confidence, 0.9);
    assert_eq!(c.settings.workers.llm.fixed_confidence, 0.95);
    let c = load_from(f.sources(
        Some("layers:\n  layer0:\n    min_confidence: 1\n"),
        None,
        &[],
    ))
    .unwrap();
    assert_eq!(c.settings.layers["layer0"].min_confidence, 1.0);
    let msg = invalid(
        load_from(f.sources(
            None,
            None,
            &[("KITBASH_LAYERS__LAYER0__MIN_CONFIDENCE", "high")],
        ))
        .unwrap_err(),
    );
    assert!(
        msg.contains("layers.layer0.min_confidence") && msg.contains("high"),
        "{msg}"
    );
}

#[test]
fn huge_and_negative_numbers_are_errors_not_panics() {
    let f = Files::new();
    let msg = invalid(
        load_from(f.sources(
            None,
            None,
            &[
                ("KITBASH_ORCHESTRATOR__HEALTH_TTL_S", "18446744073709551615"),
                ("KITBASH_REDIS__DB", "-1"),
            ],
        ))
        .unwrap_err(),
    );
    assert!(msg.contains("redis.db = -1"), "{msg}");
    assert!(!msg.contains("health_ttl_s"), "{msg}");
}

#[test]
fn precedence_defaults_yaml_dotenv_env() {
    let f = Files::new();
    let yaml = "redis:\n  key_prefix: fromyaml\n  port: 7001\nlayers:\n  layer0:\n    timeout_ms: 11\n  layer2:\n    min_confidence: 0.4\n";
    let dotenv = "KITBASH_REDIS__PORT=7002\nKITBASH_LAYERS__LAYER0__TIMEOUT_MS=22\n";
    let c = load_from(f.sources(
        Some(yaml),
        Some(dotenv),
        &[("KITBASH_LAYERS__LAYER0__TIMEOUT_MS", "33")],
    ))
    .unwrap();
    let s = &c.settings;
    assert_eq!(s.redis.key_prefix, "fromyaml");
    assert_eq!(s.redis.port, 7002);
    assert_eq!(s.layers["layer0"].timeout_ms, 33);
    assert_eq!(s.layers["layer2"].min_confidence, 0.4);
    // Merging one field keeps the layer's other defaults.
    assert_eq!(s.layers["layer2"].timeout_ms, 500);
    assert!(
        c.source_of("redis.key_prefix")
            .contains("kitbash_config.yaml")
    );
    assert!(c.source_of("redis.port").contains(".env"));
    assert!(c.source_of("redis.port").contains("KITBASH_REDIS__PORT"));
    assert_eq!(
        c.source_of("layers.layer0.timeout_ms"),
        "environment variable KITBASH_LAYERS__LAYER0__TIMEOUT_MS"
    );
}

#[test]
fn conventional_redis_vars_sit_below_kitbash_ones() {
    let f = Files::new();
    let c = load_from(f.sources(
        None,
        None,
        &[
            ("REDIS_HOST", "db.internal"),
            ("REDIS_PORT", "6380"),
            ("REDIS_DB", "2"),
            ("REDIS_PASSWORD", "12345"),
        ],
    ))
    .unwrap();
    assert_eq!(
        c.settings.redis.effective_url(),
        "redis://db.internal:6380/2"
    );
    assert_eq!(
        c.settings.redis.password.as_ref().unwrap().expose(),
        "12345",
        "numeric passwords stay strings"
    );
    assert_eq!(c.source_of("redis.port"), "environment variable REDIS_PORT");

    let c = load_from(f.sources(
        None,
        None,
        &[
            ("REDIS_URL", "redis://a:1/0"),
            ("KITBASH_REDIS__URL", "rediss://b:2/0"),
        ],
    ))
    .unwrap();
    assert_eq!(c.settings.redis.url.as_deref(), Some("rediss://b:2/0"));
}

#[test]
fn bad_env_value_names_key_value_and_variable() {
    let f = Files::new();
    let e = load_from(f.sources(None, None, &[("KITBASH_LAYERS__LAYER0__TIMEOUT_MS", "abc")]))
        .unwrap_err();
    let msg = invalid(e);
    assert!(msg.contains("layers.layer0.timeout_ms"), "{msg}");
    assert!(msg.contains("\"abc\""), "{msg}");
    assert!(
        msg.contains("environment variable KITBASH_LAYERS__LAYER0__TIMEOUT_MS"),
        "{msg}"
    );
}

#[test]
fn bad_yaml_values_name_the_file() {
    let f = Files::new();
    let msg = invalid(
        load_from(f.sources(
            Some("layers:\n  layer1:\n    min_confidence: 1.5\n"),
            None,
            &[],
        ))
        .unwrap_err(),
    );
    assert!(msg.contains("layers.layer1.min_confidence = 1.5"), "{msg}");
    assert!(msg.contains("kitbash_config.yaml"), "{msg}");
    assert!(msg.contains("between 0 and 1"), "{msg}");

    let msg = invalid(load_from(f.sources(Some("redis:\n  prot: 1\n"), None, &[])).unwrap_err());
    assert!(msg.contains("redis.prot"), "{msg}");
    assert!(msg.contains("unknown key"), "{msg}");
    assert!(msg.contains("kitbash_config.yaml"), "{msg}");

    let msg =
        invalid(load_from(f.sources(Some("logging:\n  format: fancy\n"), None, &[])).unwrap_err());
    assert!(
        msg.contains("logging.format") && msg.contains("fancy") && msg.contains("pretty"),
        "{msg}"
    );

    let msg =
        invalid(load_from(f.sources(Some("http:\n  listen: nowhere\n"), None, &[])).unwrap_err());
    assert!(
        msg.contains("http.listen") && msg.contains("nowhere"),
        "{msg}"
    );
}

#[test]
fn unknown_env_keys_and_dotenv_values_are_reported_with_their_source() {
    let f = Files::new();
    let msg = invalid(
        load_from(f.sources(None, None, &[("KITBASH_ORCHESTRATOR__MAX_INFLIGHT", "3")]))
            .unwrap_err(),
    );
    assert!(
        // The value of an unknown key is not quoted: it may be a misspelt secret.
        msg.contains("orchestrator.max_inflight = (not shown)")
            && msg.contains("KITBASH_ORCHESTRATOR__MAX_INFLIGHT)"),
        "{msg}"
    );
    assert!(!msg.contains("max_inflight.max_inflight"), "{msg}");

    let msg =
        invalid(load_from(f.sources(None, Some("KITBASH_FEED__MAX_LEN=-5\n"), &[])).unwrap_err());
    assert!(
        msg.contains("feed.max_len") && msg.contains("-5") && msg.contains(".env"),
        "{msg}"
    );
}

#[test]
fn consistency_checks() {
    let f = Files::new();
    let msg = invalid(
        load_from(f.sources(Some("layers:\n  layer3:\n    kind: worker\n"), None, &[]))
            .unwrap_err(),
    );
    assert!(msg.contains("layers.layer3.worker"), "{msg}");
    let msg = invalid(
        load_from(f.sources(None, None, &[("KITBASH_REDIS__URL", "http://x")])).unwrap_err(),
    );
    assert!(
        msg.contains("redis.url") && msg.contains("rediss://"),
        "{msg}"
    );
    let msg = invalid(
        load_from(f.sources(None, None, &[("KITBASH_LOGGING__LEVEL", "kitbash=loud")]))
            .unwrap_err(),
    );
    assert!(msg.contains("logging.level"), "{msg}");
    let msg = invalid(
        load_from(f.sources(None, None, &[("KITBASH_ORCHESTRATOR__HEALTH_TTL_S", "1")]))
            .unwrap_err(),
    );
    assert!(msg.contains("orchestrator.health_ttl_s"), "{msg}");
}

#[test]
fn lists_and_booleans_from_env() {
    let f = Files::new();
    let c = load_from(f.sources(
        None,
        None,
        &[
            ("KITBASH_WORKERS__CARTRIDGE__PATHS", "[a.jsonl, dir/b]"),
            ("KITBASH_LAYERS__LAYER1__ENABLED", "false"),
        ],
    ))
    .unwrap();
    assert_eq!(
        c.settings.workers.cartridge.paths,
        vec![PathBuf::from("a.jsonl"), PathBuf::from("dir/b")]
    );
    assert_eq!(
        c.source_of("workers.cartridge.paths"),
        "environment variable KITBASH_WORKERS__CARTRIDGE__PATHS"
    );
    assert!(!c.settings.layers["layer1"].enabled);
}

#[test]
fn explicit_missing_file_is_an_error() {
    let e = load_from(ConfigSources {
        file: Some(PathBuf::from("/nonexistent/kitbash.yaml")),
        dotenv: Some(PathBuf::from("/nonexistent/.env")),
        env: env(&[]),
    })
    .unwrap_err();
    assert!(matches!(e, ConfigError::FileNotFound(_)), "{e}");
    let e = load_from(ConfigSources {
        file: None,
        dotenv: Some(PathBuf::from("/nonexistent/.env")),
        env: env(&[("KITBASH_CONFIG", "/nonexistent/k.yaml")]),
    })
    .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/k.yaml"));
}

#[test]
fn render_shows_sources_and_hides_secrets() {
    let f = Files::new();
    let c = load_from(f.sources(
        Some("workers:\n  llm:\n    api_key: sk-very-secret\n"),
        None,
        &[
            ("REDIS_URL", "redis://user:hunter2@h:1/0"),
            ("REDIS_PASSWORD", "pw-secret"),
        ],
    ))
    .unwrap();
    let text = c.render();
    assert!(
        !text.contains("hunter2")
            && !text.contains("sk-very-secret")
            && !text.contains("pw-secret"),
        "{text}"
    );
    assert!(text.contains("redis://user:***@h:1/0"));
    assert!(text.contains("workers.llm.api_key = \"***\""));
    assert!(text.contains("# environment variable REDIS_URL"));
    assert!(text.contains("redis.port = 6379"));
    let json = c.redacted_json().to_string();
    assert!(
        !json.contains("hunter2")
            && !json.contains("sk-very-secret")
            && !json.contains("pw-secret")
    );
    assert!(
        !format!("{:?}", c.settings).contains("pw-secret"),
        "Debug hides secrets"
    );
}

#[test]
fn the_shipped_yaml_changes_nothing() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("kitbash_config.yaml");
    let c = load_from(ConfigSources {
        file: Some(path),
        dotenv: Some(PathBuf::from("/nonexistent/.env")),
        env: env(&[]),
    })
    .unwrap();
    assert_eq!(c.settings, kitbash::Settings::default());
}

#[test]
fn env_example_documents_every_setting() {
    let text =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".env.example"))
            .unwrap();
    let value = serde_json::to_value(kitbash::Settings::default()).unwrap();
    let mut leaves = Vec::new();
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    walk(
                        &if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}__{k}")
                        },
                        v,
                        out,
                    )
                }
            }
            _ => out.push(format!("KITBASH_{}", prefix.to_uppercase())),
        }
    }
    walk("", &value, &mut leaves);
    let missing: Vec<_> = leaves
        .iter()
        .filter(|l| !text.contains(l.as_str()))
        .collect();
    assert!(missing.is_empty(), ".env.example lacks {missing:?}");
}

#[test]
fn kitbash_config_command_reports_bad_env() {
    let out = Command::new(env!("CARGO_BIN_EXE_kitbash"))
        .arg("config")
        .env("KITBASH_LAYERS__LAYER0__TIMEOUT_MS", "abc")
        .env(
            "KITBASH_CONFIG",
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("kitbash_config.yaml"),
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("layers.layer0.timeout_ms")
            && err.contains("abc")
            && err.contains("environment"),
        "{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_kitbash"))
        .arg("config")
        .env("REDIS_PASSWORD", "topsecret")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("redis.password = \"***\"") && !text.contains("topsecret"),
        "{text}"
    );
}

/// The cluster settings are checked together: a prefix with braces, a
/// partition count out of range, seeds without cluster mode, and a WAIT
/// timeout the response timeout would cut short are each refused, naming
/// the key.
#[test]
fn cluster_settings_that_cannot_work_are_refused() {
    let f = Files::new();
    for (yaml, key, why) in [
        (
            "redis:\n  cluster: true\n  key_prefix: \"{kb}\"\n",
            "redis.key_prefix",
            "without braces",
        ),
        (
            "redis:\n  cluster: true\n  partitions: 0\n",
            "redis.partitions",
            "between 1 and 1024",
        ),
        (
            "redis:\n  cluster_nodes: [\"redis://10.0.0.2:7000\"]\n",
            "redis.cluster_nodes",
            "cluster mode",
        ),
        (
            "redis:\n  wait_timeout_ms: 2000\n",
            "redis.wait_timeout_ms",
            "below redis.response_timeout_ms",
        ),
    ] {
        let msg = invalid(load_from(f.sources(Some(yaml), None, &[])).unwrap_err());
        assert!(msg.contains(key) && msg.contains(why), "{yaml}: {msg}");
    }
    let ok = load_from(f.sources(
        Some("redis:\n  cluster: true\n  partitions: 3\n  cluster_nodes: [\"redis://10.0.0.2:6379\"]\n"),
        None,
        &[],
    ))
    .unwrap();
    assert_eq!(ok.settings.redis.keys().partitions(), 3);
}

#[test]
fn lane_settings_load_and_bad_ones_are_refused_by_name() {
    let f = Files::new();
    let c = load_from(f.sources(
        Some("orchestrator:\n  lanes:\n    low: { min_share: 0.1, max_queue_len: 500 }\n"),
        None,
        &[("KITBASH_ORCHESTRATOR__LANES__RESERVED_IN_FLIGHT", "8")],
    ))
    .unwrap();
    let lanes = &c.settings.orchestrator.lanes;
    assert_eq!(lanes.low.min_share, 0.1);
    assert_eq!(lanes.low.max_queue_len, Some(500));
    assert_eq!(lanes.reserved(256), 8);
    assert_eq!(
        kitbash::Settings::default()
            .orchestrator
            .lanes
            .reserved(256),
        128
    );

    for (yaml, key, why) in [
        (
            "orchestrator:\n  lanes:\n    high: { min_share: 1.5 }\n",
            "orchestrator.lanes.high.min_share",
            "between 0 and 1",
        ),
        (
            "orchestrator:\n  lanes:\n    high: { min_share: 0.6 }\n    normal: { min_share: 0.6 }\n",
            "orchestrator.lanes",
            "sum to 1 at most",
        ),
        (
            "orchestrator:\n  lanes:\n    low: { max_queue_len: 0 }\n",
            "orchestrator.lanes.low.max_queue_len",
            "greater than 0",
        ),
        (
            "orchestrator:\n  max_in_flight: 4\n  lanes:\n    reserved_in_flight: 4\n",
            "orchestrator.lanes.reserved_in_flight",
            "less than orchestrator.max_in_flight (4)",
        ),
    ] {
        let text = invalid(load_from(f.sources(Some(yaml), None, &[])).unwrap_err());
        assert!(text.contains(key) && text.contains(why), "{yaml}: {text}");
    }
}
