//! `kitbash acl`: least-privilege Redis ACL users for the daemon, a worker
//! and a client, printed ready for `redis-cli` or an ACL file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::store::acl::{self, Password, Role};
use crate::store::keys::Keys;

/// Arguments of `kitbash acl`.
#[derive(Debug, Args)]
pub struct AclArgs {
    /// Key prefix the rules cover (default: `redis.key_prefix` of the configuration).
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,

    /// Take the passwords from KITBASH_ACL_DAEMON_PASSWORD,
    /// KITBASH_ACL_WORKER_PASSWORD and KITBASH_ACL_CLIENT_PASSWORD instead
    /// of printing `>CHANGE-ME-<role>` placeholders.
    #[arg(long)]
    pub passwords_from_env: bool,

    /// Print `user …` lines of an ACL file (`aclfile`) instead of `ACL SETUSER …`.
    #[arg(long)]
    pub acl_file: bool,
}

/// The environment variable holding `role`'s password for `--passwords-from-env`.
pub fn password_env(role: Role) -> String {
    format!(
        "KITBASH_ACL_{}_PASSWORD",
        role.as_str().to_ascii_uppercase()
    )
}

/// Prints one line per user on stdout; exits 2 when the configuration is
/// invalid or a password variable is missing.
pub fn run(file: Option<PathBuf>, args: AclArgs) -> ExitCode {
    // The configuration says whether it is cluster mode (rules for every
    // partition); `--prefix` names the prefix, and works without one.
    let keys = match (crate::config::load(file), args.prefix) {
        (Ok(loaded), prefix) => {
            let mut redis = loaded.settings.redis;
            if let Some(p) = prefix {
                redis.key_prefix = p;
            }
            redis.keys()
        }
        (Err(_), Some(p)) => Keys::new(p),
        (Err(e), None) => {
            eprintln!("kitbash: {e}");
            return ExitCode::from(2);
        }
    };
    let mut lines = Vec::new();
    for user in acl::users(&keys) {
        let password = if args.passwords_from_env {
            let var = password_env(user.role);
            match std::env::var(&var) {
                Ok(p) if !p.is_empty() && !p.chars().any(char::is_whitespace) => Password::Plain(p),
                _ => {
                    eprintln!(
                        "kitbash: {var} is not set (or is empty or holds spaces); set it to the password of {} or leave out --passwords-from-env",
                        user.name
                    );
                    return ExitCode::from(2);
                }
            }
        } else {
            Password::placeholder(user.role)
        };
        lines.push(if args.acl_file {
            user.acl_file_line(&password)
        } else {
            user.setuser_line(&password)
        });
    }
    for line in lines {
        println!("{line}");
    }
    if !args.passwords_from_env {
        eprintln!(
            "kitbash: replace each >CHANGE-ME-<role> with a real password, then set redis.username and redis.password of each process"
        );
    }
    ExitCode::SUCCESS
}
