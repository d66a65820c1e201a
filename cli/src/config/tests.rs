use std::collections::HashMap;

use super::*;

fn file(url: Option<&str>, token: Option<&str>) -> FileConfig {
    FileConfig {
        url: url.map(str::to_owned),
        token: token.map(str::to_owned),
    }
}

#[test]
fn the_flag_or_environment_beats_the_file_which_beats_the_default() {
    let f = file(Some("http://file:1"), Some("file-token"));
    let s = resolve(Some("http://flag:1".into()), Some("flag-token".into()), &f);
    assert_eq!(s.url, "http://flag:1");
    assert_eq!(s.token.as_deref(), Some("flag-token"));

    let s = resolve(None, None, &f);
    assert_eq!(s.url, "http://file:1");
    assert_eq!(s.token.as_deref(), Some("file-token"));

    let s = resolve(None, None, &FileConfig::default());
    assert_eq!(s.url, DEFAULT_URL);
    assert_eq!(s.token, None);

    // an empty variable (ECHOVALUE_TOKEN=) is no value: the file's is used
    let s = resolve(Some(String::new()), Some(" ".into()), &f);
    assert_eq!(s.url, "http://file:1");
    assert_eq!(s.token.as_deref(), Some("file-token"));
}

#[test]
fn default_path_prefers_an_absolute_xdg_config_home() {
    let env = |pairs: &[(&str, &str)]| {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        move |name: &str| map.get(name).cloned()
    };
    let both = env(&[("XDG_CONFIG_HOME", "/x/conf"), ("HOME", "/home/u")]);
    assert_eq!(
        default_path(both),
        Some(PathBuf::from("/x/conf/echovalue/config.toml"))
    );
    let home = env(&[("HOME", "/home/u")]);
    assert_eq!(
        default_path(home),
        Some(PathBuf::from("/home/u/.config/echovalue/config.toml"))
    );
    // the XDG spec ignores a relative value, and an empty one is unset
    for xdg in ["relative/conf", ""] {
        let e = env(&[("XDG_CONFIG_HOME", xdg), ("HOME", "/home/u")]);
        assert_eq!(
            default_path(e),
            Some(PathBuf::from("/home/u/.config/echovalue/config.toml"))
        );
    }
    assert_eq!(default_path(env(&[])), None);
}

#[test]
fn a_missing_file_is_empty_and_a_bad_one_never_shows_its_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none.toml");
    assert_eq!(load(&path), Ok(FileConfig::default()));

    fs::write(&path, "url = \"http://x\"\ntoken = ev_tok_secret\n").unwrap();
    let err = load(&path).unwrap_err();
    assert!(err.contains("line 2"), "{err}");
    assert!(!err.contains("ev_tok_secret"), "{err}");

    fs::write(&path, "token = 5\n").unwrap();
    assert!(load(&path)
        .unwrap_err()
        .contains("`token` must be a string"));
}

#[cfg(unix)]
#[test]
fn save_writes_mode_0600_in_a_0700_directory_and_keeps_other_keys() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir
        .path()
        .join("conf")
        .join("echovalue")
        .join("config.toml");
    save(&path, "http://a:1", "tok-1").unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(
        load(&path).unwrap(),
        file(Some("http://a:1"), Some("tok-1"))
    );

    // another key, and a file made readable by others: both put right by the next save
    let mut text = fs::read_to_string(&path).unwrap();
    text.push_str("editor = \"vi\"\n");
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    save(&path, "http://b:2", "tok-2").unwrap();
    assert_eq!(mode(&path), 0o600);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains("editor = \"vi\""), "{text}");
    assert_eq!(
        load(&path).unwrap(),
        file(Some("http://b:2"), Some("tok-2"))
    );
    let left: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
    assert_eq!(left.len(), 1, "no temporary file left behind");
}

#[test]
fn save_refuses_to_replace_a_token_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    assert_eq!(check_save(&path, false), Ok(()));
    fs::write(&path, "url = \"http://x\"\n").unwrap();
    assert_eq!(check_save(&path, false), Ok(()), "a url alone is no token");
    save(&path, "http://x", "tok").unwrap();
    let err = check_save(&path, false).unwrap_err();
    assert!(err.contains("--force") && !err.contains("tok\""), "{err}");
    assert_eq!(check_save(&path, true), Ok(()));
}
