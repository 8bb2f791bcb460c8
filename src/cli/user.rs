//! Who is running intake: the session creator.

use intake::SessionOauthUser;

/// The creator: `--user "Given Family"` / `INTAKE_USER`, else `user = "…"`
/// in the user's config file (`$XDG_CONFIG_HOME/intake/config.toml`, by
/// default `~/.config/intake/config.toml`), else the OS user.
pub fn creator(user: Option<&str>) -> SessionOauthUser {
    let login = match user.map(str::trim).filter(|u| !u.is_empty()) {
        Some(u) => u.to_owned(),
        None => config_user().unwrap_or_else(os_login),
    };
    SessionOauthUser::from_name(&login)
}

/// `user` from the user's config file, if there is one that says so.
fn config_user() -> Option<String> {
    let dir = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(d) => std::path::PathBuf::from(d),
        None => std::path::PathBuf::from(std::env::var_os("HOME")?).join(".config"),
    };
    let path = dir.join("intake").join("config.toml");
    let text = std::fs::read_to_string(&path).ok()?;
    match text.parse::<toml::Table>() {
        Ok(t) => t
            .get("user")
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned),
        Err(e) => {
            tracing::warn!("ignoring {}: {e}", path.display());
            None
        }
    }
}

#[allow(unsafe_code)] // getpwuid: see SAFETY below
fn os_login() -> String {
    for var in ["USER", "LOGNAME"] {
        if let Ok(v) = std::env::var(var)
            && !v.is_empty()
        {
            return v;
        }
    }
    // SAFETY: getuid cannot fail; getpwuid returns null or a pointer to a
    // static record that is read at once, before any other call.
    unsafe {
        let pw = libc::getpwuid(libc::getuid());
        if !pw.is_null()
            && !(*pw).pw_name.is_null()
            && let Ok(s) = std::ffi::CStr::from_ptr((*pw).pw_name).to_str()
        {
            return s.to_owned();
        }
        format!("uid{}", libc::getuid())
    }
}
