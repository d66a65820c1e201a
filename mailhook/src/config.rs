//! Process settings of the mailhook, read from flags and `ECHOVALUE_*` environment variables.

use std::fmt;

use clap::Parser;

/// Settings of the mailhook worker. Only the database URL exists yet; the SMTP and delivery
/// settings arrive with the Mail2Webhook work.
#[derive(Debug, Parser)]
#[command(name = "echovalue-mailhook", version, about)]
pub struct Config {
    /// libpq connection string or URL of the echovalue database.
    #[arg(
        long,
        env = "ECHOVALUE_DATABASE_URL",
        default_value = "",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Print the effective configuration (password hidden) and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// `--print-config` output: one `ECHOVALUE_*=value` line per setting, ready for an env file.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ECHOVALUE_DATABASE_URL={}",
            redact_password(&self.database_url)
        )
    }
}

/// Hides the password of a `postgres://user:pw@host/db` URL or a `password=…` keyword.
fn redact_password(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let (head, rest) = url.split_at(scheme_end + 3);
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                return format!("{head}{}:***{}", &rest[..colon], &rest[at..]);
            }
        }
        return url.to_owned();
    }
    url.split_whitespace()
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => kv.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::redact_password;

    #[test]
    fn hides_url_password() {
        assert_eq!(
            redact_password("postgresql://u:secret@h:5432/db"),
            "postgresql://u:***@h:5432/db"
        );
        assert_eq!(
            redact_password("postgresql://u@h/db"),
            "postgresql://u@h/db"
        );
    }

    #[test]
    fn hides_keyword_password() {
        assert_eq!(
            redact_password("host=/tmp user=u password=secret dbname=d"),
            "host=/tmp user=u password=*** dbname=d"
        );
    }
}
