//! Node configuration: a small node file plus the cluster's own Kubernetes objects,
//! checked as a whole and turned into the stages' configurations.
//!
//! ```text
//!  node.yaml ──> file::NodeFile ─┐
//!                                ├─> load() ──> NodeSetup ──> pipeline()  (a fresh node)
//!  objects.yaml ──> objects ─────┘      │                 └─> Dataplane::apply (a running one)
//!                                       └─> every error, naming file, object and field
//! ```
//!
//! Defaults follow Kubernetes and Linux: cluster CIDR 10.244.0.0/16 with a /24 per
//! node (Flannel's), service CIDR 10.96.0.0/12 (kubeadm's), NodePorts 30000-32767,
//! MTU 1500, FDB ageing 300 s. A configuration with any error builds nothing;
//! [`apply::Dataplane::apply`] keeps the running one and rebuilds only the stages whose
//! configuration changed (routes alone change in place, O(changed routes)).
//!
//! This module needs the `config` feature; the final binary picks the k8s-openapi
//! version feature (the CLI and the tests use `v1_37`).

pub mod agent;
pub mod apply;
pub mod file;
mod nat;
mod node;
pub mod objects;
pub mod overlay;
pub mod services;

pub use agent::Agent;
pub use apply::{Applied, Dataplane};
pub use node::{BVI_BASE, HOST_OUTPUT, MAX_PORTS, NodeSetup, Peer, Port, RouteEntry};

/// A named text: a file's name (as errors print it) and its contents.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    /// Name, as errors print it (`node.yaml`).
    pub name: &'a str,
    /// The YAML.
    pub text: &'a str,
}

/// One thing wrong with a configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file is not YAML of the expected shape (the message has the line and
    /// column, and a snippet).
    #[error("{file}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// What the YAML reader said.
        message: String,
    },
    /// A field of an object is wrong (`field` is empty when the whole object is).
    #[error("{file}: {object}: {}{problem}", field_and_value(field, value.as_deref()))]
    Field {
        /// The file.
        file: String,
        /// The object (`Port/pod-a`, `Node/worker-2`).
        object: String,
        /// The field path inside it (`spec.podCIDR`).
        field: String,
        /// The value given, when there is one.
        value: Option<String>,
        /// What is wrong with it, in plain words.
        problem: String,
    },
}

/// `field "value": ` for an error message; empty when there is no field.
fn field_and_value(field: &str, value: Option<&str>) -> String {
    match (field, value) {
        ("", _) => String::new(),
        (f, Some(v)) => format!("{f} {v:?}: "),
        (f, None) => format!("{f}: "),
    }
}

impl ConfigError {
    /// A YAML error; the reader's leading `error: ` is dropped.
    pub(crate) fn syntax(file: &str, message: &str) -> Self {
        ConfigError::Syntax {
            file: file.to_string(),
            message: message.strip_prefix("error: ").unwrap_or(message).trim_end().to_string(),
        }
    }

    /// A field error.
    pub(crate) fn field(file: &str, object: &str, field: &str, value: Option<&str>, problem: &str) -> Self {
        ConfigError::Field {
            file: file.to_string(),
            object: object.to_string(),
            field: field.to_string(),
            value: value.map(str::to_string),
            problem: problem.to_string(),
        }
    }
}

/// Every error found in a configuration (one per line when printed).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// Read the node file and the objects, check them together and build the node's
/// stage configurations.
///
/// # Errors
/// Every error found, each naming its file, object and field; nothing is built.
pub fn load(node: Source<'_>, objects: &[Source<'_>]) -> Result<NodeSetup, ConfigErrors> {
    let mut errors = Vec::new();
    let file: Option<file::NodeFile> = match serde_saphyr::from_str(node.text) {
        Ok(f) => Some(f),
        Err(e) => {
            errors.push(ConfigError::syntax(node.name, &e.to_string()));
            None
        }
    };
    let mut objs = Vec::new();
    for src in objects {
        match objects::parse(src) {
            Ok(o) => objs.extend(o),
            Err(e) => errors.extend(e),
        }
    }
    let Some(file) = file else { return Err(ConfigErrors(errors)) };
    match node::build(node.name, &file, &objs) {
        Ok(setup) if errors.is_empty() => Ok(setup),
        Ok(_) => Err(ConfigErrors(errors)),
        Err(e) => {
            errors.extend(e);
            Err(ConfigErrors(errors))
        }
    }
}
