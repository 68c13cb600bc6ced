//! The restriction rules by name, and the operator's policy that relaxes some of them.
//!
//! A policy file lists the names of the rules to relax, either as a JSON array of strings
//! (`["no-probes", "no-host-port"]`) or as plain text: names separated by whitespace, commas or
//! newlines, with `#` starting a comment that runs to the end of the line. An empty file relaxes
//! nothing. Unknown names are an error that lists the known ones, so that a typo never silently
//! leaves a rule enforced.

use std::collections::BTreeSet;
use std::path::Path;

use crate::ServerlessError;

/// A restriction rule: its stable name and what it refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The stable name used in policies, messages and metrics, e.g. `no-host-path`.
    pub name: &'static str,
    /// One line saying what the rule refuses.
    pub summary: &'static str,
}

/// The DaemonSet kind.
pub const NO_DAEMONSET: &str = "no-daemonset";
/// hostPath volumes.
pub const NO_HOST_PATH: &str = "no-host-path";
/// Liveness, readiness and startup probes.
pub const NO_PROBES: &str = "no-probes";
/// Privileged containers and Windows host-process containers.
pub const NO_PRIVILEGED: &str = "no-privileged";
/// Capabilities added beyond [`crate::ALLOWED_CAPABILITIES`].
pub const NO_EXTRA_CAPABILITIES: &str = "no-extra-capabilities";
/// Services of type NodePort, and node ports on any Service.
pub const NO_NODE_PORT: &str = "no-node-port";
/// `hostNetwork: true`.
pub const NO_HOST_NETWORK: &str = "no-host-network";
/// `hostPID: true`.
pub const NO_HOST_PID: &str = "no-host-pid";
/// `hostIPC: true`.
pub const NO_HOST_IPC: &str = "no-host-ipc";
/// `hostPort` on a container port.
pub const NO_HOST_PORT: &str = "no-host-port";

/// Every rule, in the order they are documented.
pub const RULES: &[Rule] = &[
    Rule {
        name: NO_DAEMONSET,
        summary: "the DaemonSet kind (there are no nodes to run one pod per node on)",
    },
    Rule {
        name: NO_HOST_PATH,
        summary: "hostPath volumes",
    },
    Rule {
        name: NO_PROBES,
        summary: "liveness, readiness and startup probes on any container",
    },
    Rule {
        name: NO_PRIVILEGED,
        summary: "privileged containers and Windows host-process containers",
    },
    Rule {
        name: NO_EXTRA_CAPABILITIES,
        summary: "capabilities added beyond the allowed set",
    },
    Rule {
        name: NO_NODE_PORT,
        summary: "Services of type NodePort, nodePort on any Service port, healthCheckNodePort",
    },
    Rule {
        name: NO_HOST_NETWORK,
        summary: "pods with hostNetwork",
    },
    Rule {
        name: NO_HOST_PID,
        summary: "pods with hostPID",
    },
    Rule {
        name: NO_HOST_IPC,
        summary: "pods with hostIPC",
    },
    Rule {
        name: NO_HOST_PORT,
        summary: "hostPort on any container port",
    },
];

/// The rule of that name, if there is one.
pub fn rule(name: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.name == name)
}

/// Which rules a cluster enforces. The default enforces every rule; an operator (never a user)
/// relaxes rules by name, with a flag or a policy file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    relaxed: BTreeSet<&'static str>,
}

impl Policy {
    /// Relaxes one rule. Unknown names are an error that lists the known ones.
    pub fn relax(&mut self, name: &str) -> Result<&mut Self, ServerlessError> {
        let rule = rule(name.trim()).ok_or_else(|| ServerlessError::UnknownRule {
            name: name.to_string(),
            known: RULES.iter().map(|r| r.name).collect::<Vec<_>>().join(", "),
        })?;
        self.relaxed.insert(rule.name);
        Ok(self)
    }

    /// A policy that relaxes the named rules.
    pub fn with_relaxed<I, S>(names: I) -> Result<Policy, ServerlessError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut policy = Policy::default();
        for name in names {
            policy.relax(name.as_ref())?;
        }
        Ok(policy)
    }

    /// Parses a policy: a JSON array of rule names, or plain text (see the module docs).
    pub fn parse(text: &str) -> Result<Policy, ServerlessError> {
        if text.trim_start().starts_with('[') {
            let names: Vec<String> = serde_json::from_str(text).map_err(|e| {
                ServerlessError::PolicyFormat(format!("expected a JSON array of rule names: {e}"))
            })?;
            return Policy::with_relaxed(names);
        }
        let names = text
            .lines()
            .map(|line| line.split_once('#').map_or(line, |(before, _)| before))
            .flat_map(|line| line.split(|c: char| c == ',' || c.is_whitespace()))
            .filter(|name| !name.is_empty());
        Policy::with_relaxed(names)
    }

    /// Reads a policy file (see [`Policy::parse`]).
    pub fn from_file(path: &Path) -> Result<Policy, ServerlessError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServerlessError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Policy::parse(&text)
    }

    /// Whether the named rule is enforced (unknown names are reported as enforced).
    pub fn is_enforced(&self, name: &str) -> bool {
        !self.relaxed.contains(name)
    }

    /// The relaxed rules' names, sorted.
    pub fn relaxed(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.relaxed.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_enforces_every_rule() {
        let policy = Policy::default();
        for rule in RULES {
            assert!(policy.is_enforced(rule.name), "{}", rule.name);
        }
        assert_eq!(policy.relaxed().count(), 0);
    }

    #[test]
    fn relax_one_rule() {
        let mut policy = Policy::default();
        policy.relax(NO_PROBES).unwrap();
        assert!(!policy.is_enforced(NO_PROBES));
        assert!(policy.is_enforced(NO_HOST_PATH));
        assert_eq!(policy.relaxed().collect::<Vec<_>>(), vec![NO_PROBES]);
    }

    #[test]
    fn unknown_rule_lists_known_ones() {
        let err = Policy::default().relax("no-probe").unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("unknown serverless rule \"no-probe\""),
            "{message}"
        );
        for rule in RULES {
            assert!(message.contains(rule.name), "{message}");
        }
    }

    #[test]
    fn parse_text_with_comments_commas_and_blank_lines() {
        let policy = Policy::parse(
            "# relaxed on this cluster\n\nno-probes, no-host-port  # for the legacy apps\n\tno-host-ipc\n",
        )
        .unwrap();
        assert_eq!(
            policy.relaxed().collect::<Vec<_>>(),
            vec![NO_HOST_IPC, NO_HOST_PORT, NO_PROBES]
        );
    }

    #[test]
    fn parse_json_list() {
        let policy = Policy::parse(r#"["no-daemonset", "no-node-port"]"#).unwrap();
        assert!(!policy.is_enforced(NO_DAEMONSET));
        assert!(!policy.is_enforced(NO_NODE_PORT));
        assert!(policy.is_enforced(NO_PROBES));
    }

    #[test]
    fn parse_rejects_bad_json_and_unknown_names() {
        assert!(matches!(
            Policy::parse(r#"["no-probes", 3]"#),
            Err(ServerlessError::PolicyFormat(_))
        ));
        assert!(matches!(
            Policy::parse("no-probes\nno-such-rule\n"),
            Err(ServerlessError::UnknownRule { name, .. }) if name == "no-such-rule"
        ));
    }

    #[test]
    fn empty_policy_file_relaxes_nothing() {
        assert_eq!(Policy::parse("  \n# nothing\n").unwrap(), Policy::default());
    }

    #[test]
    fn from_file_reads_and_reports_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.txt");
        std::fs::write(&path, "no-host-path\n").unwrap();
        let policy = Policy::from_file(&path).unwrap();
        assert!(!policy.is_enforced(NO_HOST_PATH));
        let missing = dir.path().join("missing.txt");
        let err = Policy::from_file(&missing).unwrap_err();
        assert!(err.to_string().contains("missing.txt"), "{err}");
    }
}
