//! OpenSSH's `%` tokens (ssh_config(5), TOKENS) and the local facts some of them need:
//! this machine's host name (`%l`, `%L`), our uid (`%i`) and the connection hash (`%C`).

use std::os::unix::fs::MetadataExt;

use sha1::{Digest, Sha1};

/// The values a `%` token may stand for, as strings.
pub(crate) struct TokenValues {
    /// `%n`: the alias as typed.
    pub alias: String,
    /// `%h`: the target host name.
    pub host: String,
    /// `%p`
    pub port: String,
    /// `%r`: the remote user.
    pub user: String,
    /// `%u`: the local user.
    pub local_user: String,
    /// `%d`: the local home directory.
    pub home: String,
    /// `%k`: HostKeyAlias, else the host name.
    pub key_alias: String,
}

impl TokenValues {
    /// `raw` with every token replaced; `Err(token)` names the first one not known.
    pub(crate) fn expand(&self, raw: &str) -> Result<String, char> {
        let mut out = String::new();
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let token = chars.next().unwrap_or(' ');
            out.push_str(&self.value(token).ok_or(token)?);
        }
        Ok(out)
    }

    fn value(&self, token: char) -> Option<String> {
        Some(match token {
            '%' => "%".to_string(),
            'C' => connection_hash(&local_host_name(), &self.host, &self.port, &self.user),
            'L' => short_host_name(),
            'd' => self.home.clone(),
            'h' => self.host.clone(),
            'i' => uid().to_string(),
            'k' => self.key_alias.clone(),
            'l' => local_host_name(),
            'n' => self.alias.clone(),
            'p' => self.port.clone(),
            'r' => self.user.clone(),
            'u' => self.local_user.clone(),
            _ => return None,
        })
    }
}

/// `%C`: SHA-1 (hex) of `%l%h%p%r`, as OpenSSH 9 computes it.
fn connection_hash(local: &str, host: &str, port: &str, user: &str) -> String {
    let digest = Sha1::digest(format!("{local}{host}{port}{user}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// gethostname(2), read from procfs since the crate does not link libc directly.
pub(crate) fn local_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

fn short_host_name() -> String {
    let full = local_host_name();
    full.split('.').next().unwrap_or_default().to_string()
}

/// Our uid: the owner of our own /proc entry.
pub(crate) fn uid() -> u32 {
    std::fs::metadata("/proc/self").map_or(0, |m| m.uid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expand_and_unknown_ones_are_named() {
        let t = TokenValues {
            alias: "Web".into(),
            host: "web.example".into(),
            port: "22".into(),
            user: "bob".into(),
            local_user: "ev".into(),
            home: "/home/ev".into(),
            key_alias: "web.example".into(),
        };
        assert_eq!(
            t.expand("%d/%n_%h:%p_%r_%u%%").unwrap(),
            "/home/ev/Web_web.example:22_bob_ev%"
        );
        assert_eq!(t.expand("a%Zb"), Err('Z'));
        // OpenSSH's value for this input, from `ssh -G` (%C of vm, mybox, 2022, fromstar).
        let hash = connection_hash("vm", "mybox", "2022", "fromstar");
        assert_eq!(hash, "bbd59ffda71acb964a1348b1fc4b2aa34e4d04d5");
    }
}
