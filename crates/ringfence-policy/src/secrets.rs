//! Files that hold credentials: one list for the whole policy. The shell analysis asks before a
//! command list reads one of them and sends data over the network; the sandbox hides the
//! home directory's credential stores unless `allowRead` re-opens them.

use std::path::Path;

/// File names (globs on the last path component) that look like credentials.
pub const SECRET_FILE_NAMES: &[&str] = &[
    ".env",
    ".env.*",
    ".envrc",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.keystore",
    "*.jks",
    "id_rsa",
    "id_dsa",
    "id_ecdsa",
    "id_ed25519",
    "id_*",
    ".npmrc",
    ".pypirc",
    ".netrc",
    "_netrc",
    ".git-credentials",
    ".pgpass",
    ".dockercfg",
    "*-service-account.json",
    "service-account*.json",
    "credentials.json",
    "application_default_credentials.json",
    "credentials.toml",
    "terraform.tfstate",
    "*.tfvars",
];

/// Names that match [`SECRET_FILE_NAMES`] but are, by convention, no secret: templates of an
/// `.env` file and public keys.
pub const NOT_SECRET_NAMES: &[&str] = &[
    ".env.example",
    ".env.sample",
    ".env.template",
    ".env.dist",
    ".env.defaults",
    "*.pub",
    "*.example",
];

/// Credential stores of the home directory (relative to it): hidden from every sandboxed
/// command by default (`filesystem.defaultDenyRead`), and secrets to the shell analysis.
pub const DEFAULT_DENY_READ: &[&str] = &[
    ".ssh",
    ".aws",
    ".azure",
    ".config/gcloud",
    ".kube",
    ".docker/config.json",
    ".git-credentials",
    ".netrc",
    ".npmrc",
    ".pypirc",
    ".config/gh",
    ".config/hub",
    ".gnupg",
    ".password-store",
    ".local/share/keyrings",
    ".cargo/credentials",
    ".cargo/credentials.toml",
    ".terraform.d/credentials.tfrc.json",
    ".vault-token",
    // Browser profiles: cookies, saved passwords, session tokens.
    ".mozilla",
    ".config/google-chrome",
    ".config/chromium",
    ".config/BraveSoftware",
    ".config/microsoft-edge",
    ".config/vivaldi",
    ".config/opera",
    "snap/firefox",
    "snap/chromium",
    ".var/app/org.mozilla.firefox",
    ".var/app/com.google.Chrome",
    "Library/Application Support/Google/Chrome",
    "Library/Application Support/Firefox",
    "Library/Keychains",
];

fn name_matches(pattern: &str, name: &str) -> bool {
    glob::Pattern::new(pattern).is_ok_and(|p| p.matches(name))
}

/// A file name that looks like a credential (`.env.local`, `server.pem`, `id_ed25519`, ...).
pub fn is_secret_name(name: &str) -> bool {
    SECRET_FILE_NAMES.iter().any(|p| name_matches(p, name))
        && !NOT_SECRET_NAMES.iter().any(|p| name_matches(p, name))
}

/// A path that looks like a credential: its name does, or it lies in one of the home
/// directory's credential stores ([`DEFAULT_DENY_READ`]).
pub fn is_secret_path(path: &Path, home: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| is_secret_name(&n.to_string_lossy()))
        || DEFAULT_DENY_READ
            .iter()
            .any(|d| path.starts_with(home.join(d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        for n in [
            ".env",
            ".env.local",
            ".env.production",
            "server.pem",
            "tls.key",
            "id_rsa",
            "id_ed25519",
            ".npmrc",
            ".pypirc",
            "deploy-service-account.json",
            ".git-credentials",
            "credentials.json",
        ] {
            assert!(is_secret_name(n), "{n}");
        }
        for n in [
            ".env.example",
            "id_rsa.pub",
            "main.rs",
            "key.rs",
            "environment.md",
            "README",
        ] {
            assert!(!is_secret_name(n), "{n}");
        }
        let home = Path::new("/home/u");
        assert!(is_secret_path(Path::new("/home/u/.aws/credentials"), home));
        assert!(is_secret_path(Path::new("/home/u/.kube/config"), home));
        assert!(is_secret_path(Path::new("/home/u/proj/.env"), home));
        assert!(!is_secret_path(Path::new("/home/u/proj/src/lib.rs"), home));
        assert!(!is_secret_path(
            Path::new("/home/u/.docker/other.json"),
            home
        ));
    }
}
