//! Where the base URL and the token come from, and the config file that can hold them.
//!
//! The file is TOML with two keys, `url` and `token`; any other key is kept when `--save`
//! rewrites it. It is written whole to a temporary file with mode 0600 next to it and renamed
//! over the old one, in a directory made with mode 0700, so the token is never readable by
//! others, not even for a moment. No error message ever quotes the file's text.

use std::ffi::OsString;
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

/// The base URL when neither a flag, the environment nor the file names one.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// What the config file says (either key may be missing, like the file itself).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileConfig {
    pub url: Option<String>,
    pub token: Option<String>,
}

/// The base URL and token a command uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub url: String,
    pub token: Option<String>,
}

/// Picks each value: the command line or the environment (clap merges the two, the flag
/// first), then the file, then for the URL the default. Empty values count as absent.
pub fn resolve(url: Option<String>, token: Option<String>, file: &FileConfig) -> Settings {
    let given = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    Settings {
        url: given(url)
            .or_else(|| given(file.url.clone()))
            .unwrap_or_else(|| DEFAULT_URL.to_owned()),
        token: given(token).or_else(|| given(file.token.clone())),
    }
}

/// `$XDG_CONFIG_HOME/echovalue/config.toml` when that variable holds an absolute path, else
/// `$HOME/.config/echovalue/config.toml`; `None` without either. `var` reads the environment
/// (a parameter so tests need not change the process's own).
pub fn default_path(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let dir = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = dir("XDG_CONFIG_HOME")
        .filter(|p| p.is_absolute())
        .or_else(|| dir("HOME").map(|home| home.join(".config")))?;
    Some(base.join("echovalue").join("config.toml"))
}

/// Reads the file; a missing file is an empty config.
pub fn load(path: &Path) -> Result<FileConfig, String> {
    let table = read_table(path)?;
    let field = |key: &str| match table.get(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{}: `{key}` must be a string", path.display())),
    };
    Ok(FileConfig {
        url: field("url")?,
        token: field("token")?,
    })
}

/// Refuses, before anything is asked of the server, to let `--save` replace a token the file
/// already holds (it may be the only copy of a wallet's root token) unless `force`.
pub fn check_save(path: &Path, force: bool) -> Result<(), String> {
    if !force && load(path)?.token.is_some() {
        return Err(format!(
            "{} already holds a token: add --force to replace it, or --config PATH to save \
             elsewhere",
            path.display()
        ));
    }
    Ok(())
}

/// Writes `url` and `token` into the file, keeping its other keys.
pub fn save(path: &Path, url: &str, token: &str) -> Result<(), String> {
    let mut table = read_table(path)?;
    table.insert("url".into(), toml::Value::String(url.to_owned()));
    table.insert("token".into(), toml::Value::String(token.to_owned()));
    let text = toml::to_string(&table).map_err(|e| format!("cannot write the config: {e}"))?;
    let fail = |what: &str, e: std::io::Error| format!("cannot {what} {}: {e}", path.display());

    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    private_dir_builder()
        .create(&dir)
        .map_err(|e| fail("make the directory of", e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = private_file_options().open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(fail("write", e));
    }
    Ok(())
}

/// The file as a TOML table; empty when the file does not exist. A parse error names the
/// line, never the text (which may hold the token).
fn read_table(path: &Path) -> Result<toml::Table, String> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(toml::Table::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    text.parse::<toml::Table>().map_err(|e| {
        let at = e.span().map(|s| {
            let before = &text.as_bytes()[..s.start.min(text.len())];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            format!(" on line {line}")
        });
        let at = at.unwrap_or_default();
        format!("{} is not valid TOML{at}: {}", path.display(), e.message())
    })
}

#[cfg(unix)]
fn private_dir_builder() -> fs::DirBuilder {
    use std::os::unix::fs::DirBuilderExt;
    let mut b = fs::DirBuilder::new();
    b.recursive(true).mode(0o700);
    b
}

#[cfg(not(unix))]
fn private_dir_builder() -> fs::DirBuilder {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    b
}

#[cfg(unix)]
fn private_file_options() -> fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = fs::OpenOptions::new();
    o.write(true).create_new(true).mode(0o600);
    o
}

#[cfg(not(unix))]
fn private_file_options() -> fs::OpenOptions {
    let mut o = fs::OpenOptions::new();
    o.write(true).create_new(true);
    o
}

#[cfg(test)]
mod tests;
