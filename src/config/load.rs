//! Loading: the sources (defaults, YAML file, `.env`, environment), their
//! precedence, the environment provider, and where each value came from.

use super::*;

/// Where to look for configuration; tests pass their own.
#[derive(Debug, Clone, Default)]
pub struct ConfigSources {
    /// YAML file; `None` means `$KITBASH_CONFIG` or `./kitbash_config.yaml`.
    pub file: Option<PathBuf>,
    /// `.env` file; `None` means `./.env`.
    pub dotenv: Option<PathBuf>,
    /// Environment variables; `None` means the process environment.
    pub env: Option<Vec<(String, String)>>,
}

/// The effective settings, with the figment that knows each value's source.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The validated settings.
    pub settings: Settings,
    figment: Figment,
}

impl LoadedConfig {
    /// The source of the value at `key` (dotted path), as a user would name it.
    pub fn source_of(&self, key: &str) -> String {
        source_name(&self.figment, key)
    }

    /// Every effective value as `key = value  # source`, secrets redacted.
    pub fn render(&self) -> String {
        let value = serde_json::to_value(&self.settings).expect("settings serialize");
        let mut leaves = Vec::new();
        flatten("", &value, &mut leaves);
        let width = leaves
            .iter()
            .map(|(k, v)| k.len() + v.len() + 3)
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (key, shown) in leaves {
            let line = format!("{key} = {shown}");
            out.push_str(&format!(
                "{line:<width$}  # {}\n",
                self.source_of(&key),
                width = width
            ));
        }
        out
    }

    /// The effective settings as JSON, secrets redacted.
    pub fn redacted_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(&self.settings).expect("settings serialize");
        redact_json("", &mut value);
        value
    }
}

pub(super) fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            let mut shown = other.clone();
            redact_json(prefix, &mut shown);
            out.push((prefix.to_string(), shown.to_string()));
        }
    }
}

/// Loads the configuration from the process's files and environment.
pub fn load(file: Option<PathBuf>) -> Result<LoadedConfig, ConfigError> {
    load_from(ConfigSources {
        file,
        ..Default::default()
    })
}

/// The YAML file a load reads: `file` when given, else `$KITBASH_CONFIG`
/// when set and not empty, else `./kitbash_config.yaml`; and whether it
/// was named (a named file must exist, the default one may be absent).
fn config_file(file: Option<PathBuf>, env: &[(String, String)]) -> (PathBuf, bool) {
    match file {
        Some(path) => (path, true),
        None => match env.iter().find(|(k, _)| k == CONFIG_PATH_ENV) {
            Some((_, v)) if !v.is_empty() => (PathBuf::from(v), true),
            _ => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        },
    }
}

/// The YAML file [`load`] reads for `file` (`--config`), with the process
/// environment: where `kitbash calibrate --write` writes.
pub fn config_path(file: Option<PathBuf>) -> PathBuf {
    let env: Vec<(String, String)> = std::env::vars().collect();
    config_file(file, &env).0
}

/// Loads the configuration from the given sources.
pub fn load_from(sources: ConfigSources) -> Result<LoadedConfig, ConfigError> {
    let env: Vec<(String, String)> = match sources.env {
        Some(env) => env,
        None => std::env::vars().collect(),
    };
    let (file, explicit) = config_file(sources.file, &env);
    let mut figment = Figment::from(VarsProvider::defaults());
    if file.exists() {
        figment = figment.merge(Yaml::file_exact(&file));
    } else if explicit {
        return Err(ConfigError::FileNotFound(file));
    }

    let dotenv_path = sources.dotenv.unwrap_or_else(|| PathBuf::from(".env"));
    if dotenv_path.exists() {
        let vars = read_dotenv(&dotenv_path)?;
        let origin = format!(".env file {}", dotenv_path.display());
        // (`KITBASH_CONFIG` and `KITBASH_LOG` are read from the process
        // environment only: the file is found before .env is read.)
        figment = figment
            .merge(VarsProvider::redis(&origin, &vars))
            .merge(VarsProvider::kitbash(&origin, &vars));
    }
    figment = figment
        .merge(VarsProvider::redis("environment", &env))
        .merge(VarsProvider::kitbash("environment", &env));

    let settings: Settings = figment.extract_lossy().map_err(|e| describe(&figment, e))?;
    let problems = validate(&settings);
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(
            problems
                .into_iter()
                .map(|(key, value, why)| {
                    format!(
                        "  {key} = {value} (from {}): {why}",
                        source_name(&figment, &key)
                    )
                })
                .collect(),
        ));
    }
    Ok(LoadedConfig { settings, figment })
}

pub(super) fn read_dotenv(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let iter = dotenvy::from_path_iter(path).map_err(|e| ConfigError::DotEnv {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    iter.map(|item| {
        item.map_err(|e| ConfigError::DotEnv {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    })
    .collect()
}

/// Names a value's source: the provider, and the variable for env sources.
pub(super) fn source_name(figment: &Figment, key: &str) -> String {
    match figment.find_metadata(key) {
        Some(meta) => describe_metadata(meta, key),
        None => "built-in default".into(),
    }
}

pub(super) fn describe_metadata(meta: &Metadata, key: &str) -> String {
    let keys: Vec<&str> = key.split('.').collect();
    let name = meta.interpolate(&Profile::Default, &keys);
    match &meta.source {
        Some(figment::Source::File(path)) => format!("{} ({})", meta.name, path.display()),
        _ if meta.name.contains("environment") || meta.name.contains(".env") => {
            format!("{} {}", meta.name, name)
        }
        _ => meta.name.to_string(),
    }
}

/// Turns figment's errors into lines naming key, value and source.
pub(super) fn describe(figment: &Figment, err: figment::Error) -> ConfigError {
    use figment::error::Kind;
    let mut lines = Vec::new();
    for e in err {
        // figment's path already ends in the unknown field's name.
        let key = e.path.join(".");
        // An unknown key may be a misspelt secret (`pasword`): its value is not shown.
        let value = match &e.kind {
            Kind::UnknownField(..) => "(not shown)".into(),
            _ => figment
                .find_value(&key)
                .ok()
                .map(|v| display_value(&key, &v))
                .unwrap_or_else(|| "?".into()),
        };
        let source = match &e.metadata {
            Some(meta) => describe_metadata(meta, &key),
            None => source_name(figment, &key),
        };
        let why = match &e.kind {
            Kind::UnknownField(field, expected) => format!(
                "unknown key `{field}`; expected one of: {}",
                expected.join(", ")
            ),
            // `actual` quotes the value; not for a secret (`password: 4711`).
            Kind::InvalidType(_, expected) if is_secret_key(&key) => {
                format!("invalid type: expected {expected}; write the secret as a quoted string")
            }
            Kind::InvalidType(actual, expected) => {
                format!("invalid type: found {actual}, expected {expected}")
            }
            Kind::InvalidValue(_, expected) if is_secret_key(&key) => {
                format!("invalid value: expected {expected}")
            }
            Kind::InvalidValue(actual, expected) => {
                format!("invalid value: found {actual}, expected {expected}")
            }
            Kind::UnknownVariant(found, expected) => format!(
                "unknown value `{found}`; expected one of: {}",
                expected.join(", ")
            ),
            other => other.to_string(),
        };
        lines.push(format!("  {key} = {value} (from {source}): {why}"));
    }
    ConfigError::Invalid(lines)
}

pub(super) fn display_value(key: &str, value: &Value) -> String {
    if is_secret_key(key) {
        return "***".into();
    }
    match value {
        Value::String(_, s) => format!("{:?}", redact_url(s)),
        Value::Char(_, c) => format!("{c:?}"),
        Value::Bool(_, b) => b.to_string(),
        Value::Num(_, n) => match n.to_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            Some(f) => f.to_string(),
            None => "?".into(),
        },
        Value::Empty(_, _) => "null".into(),
        Value::Dict(..) => "{…}".into(),
        Value::Array(..) => "[…]".into(),
    }
}

/// A provider over (name, value) pairs: `KITBASH_*` variables or the
/// conventional `REDIS_*` ones, from the environment or a `.env` file.
pub(super) struct VarsProvider {
    name: String,
    naming: Naming,
    dict: Dict,
}

/// How a provider names the place a key came from.
#[derive(Clone, Copy)]
pub(super) enum Naming {
    /// By the provider's name alone (built-in defaults).
    Plain,
    /// `KITBASH_A__B` for key `a.b`.
    Kitbash,
    /// `REDIS_URL` for key `redis.url`.
    Redis,
}

impl VarsProvider {
    fn defaults() -> Self {
        let dict = Serialized::defaults(Settings::default())
            .data()
            .ok()
            .and_then(|mut m| m.remove(&Profile::Default))
            .unwrap_or_default();
        Self {
            name: "built-in default".into(),
            naming: Naming::Plain,
            dict,
        }
    }

    fn kitbash(origin: &str, vars: &[(String, String)]) -> Self {
        let mut dict = Dict::new();
        for (name, value) in vars {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if NON_CONFIG_VARS.contains(&name.as_str()) || rest.is_empty() {
                continue;
            }
            let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
            insert_path(&mut dict, &path, parse_var(value));
        }
        Self {
            name: origin.to_string(),
            naming: Naming::Kitbash,
            dict,
        }
    }

    fn redis(origin: &str, vars: &[(String, String)]) -> Self {
        let mut redis = Dict::new();
        for (var, key) in REDIS_VARS {
            if let Some((_, value)) = vars.iter().find(|(k, _)| k == var) {
                redis.insert((*key).to_string(), Value::from(value.clone()));
            }
        }
        let mut dict = Dict::new();
        if !redis.is_empty() {
            dict.insert("redis".into(), Value::from(redis));
        }
        Self {
            name: origin.to_string(),
            naming: Naming::Redis,
            dict,
        }
    }
}

/// Values are strings; `extract_lossy` turns "20" or "true" into numbers and
/// booleans where the field wants them. Lists and maps are written as YAML
/// flow (`[a, b]`).
pub(super) fn parse_var(value: &str) -> Value {
    let trimmed = value.trim();
    if (trimmed.starts_with('[') || trimmed.starts_with('{'))
        && nesting(trimmed) <= MAX_VAR_NESTING
        && let Ok(v) = trimmed.parse::<Value>()
    {
        return v;
    }
    Value::from(value.to_string())
}

/// Deepest list/map nesting a variable's value may have; deeper values stay
/// strings (and fail as the wrong type), since figment's parser recurses per
/// level and a value of `[[[[…` would otherwise overflow the stack.
pub(super) const MAX_VAR_NESTING: usize = 8;

pub(super) fn nesting(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for c in text.chars() {
        match c {
            '[' | '{' => {
                depth += 1;
                max = max.max(depth);
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

pub(super) fn insert_path(dict: &mut Dict, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            } else {
                let mut inner = Dict::new();
                insert_path(&mut inner, rest, value);
                *entry = Value::from(inner);
            }
        }
    }
}

impl Provider for VarsProvider {
    fn metadata(&self) -> Metadata {
        let naming = self.naming;
        let name = match naming {
            Naming::Plain => self.name.clone(),
            _ if self.name == "environment" => "environment variable".to_string(),
            _ => format!("{}, variable", self.name),
        };
        Metadata::named(name).interpolater(move |_: &Profile, keys: &[&str]| match naming {
            Naming::Plain => keys.join("."),
            Naming::Redis => {
                let key = keys.get(1).copied().unwrap_or_default();
                REDIS_VARS
                    .iter()
                    .find(|(_, k)| *k == key)
                    .map(|(var, _)| (*var).to_string())
                    .unwrap_or_else(|| "REDIS_*".into())
            }
            Naming::Kitbash => {
                let joined: Vec<String> = keys.iter().map(|k| k.to_ascii_uppercase()).collect();
                format!("{ENV_PREFIX}{}", joined.join("__"))
            }
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut map = Map::new();
        map.insert(Profile::Default, self.dict.clone());
        Ok(map)
    }
}
