//! Kubernetes objects as `kubectl get -o yaml` prints them: one or many documents,
//! each an object or a `List` of them (what `kubectl get nodes -o yaml` prints), read
//! into k8s-openapi's types.
//!
//! `Node` objects give the routes to other nodes' pod CIDRs (and this node's pod CIDR
//! when the node file has none). `Service` and `EndpointSlice` give the service
//! table ([`super::services`]). `NetworkPolicy` is read and checked against its
//! schema, then reported as not applied until its stage exists. Any other kind is
//! reported, never silently ignored.

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::Value;

use super::{ConfigError, Source};

/// One object read from a file.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    /// A node.
    Node(Box<Node>),
    /// A service.
    Service(Box<Service>),
    /// An endpoint slice.
    EndpointSlice(Box<EndpointSlice>),
    /// A network policy (read; applied when the policy stage lands).
    NetworkPolicy(Box<NetworkPolicy>),
    /// A kind podplane does not read.
    Other {
        /// `kind`.
        kind: String,
        /// `metadata.name`.
        name: String,
    },
}

/// An object with the file it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Located {
    /// The file's name as given.
    pub file: String,
    /// The object.
    pub object: Object,
}

impl Object {
    /// `Kind/name` (`Kind/namespace/name` for namespaced kinds), as errors name it.
    pub fn label(&self) -> String {
        let ns = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            format!("{}/{}", m.namespace.as_deref().unwrap_or("default"), m.name.as_deref().unwrap_or(""))
        };
        match self {
            Object::Node(n) => format!("Node/{}", n.metadata.name.as_deref().unwrap_or("")),
            Object::Service(s) => format!("Service/{}", ns(&s.metadata)),
            Object::EndpointSlice(s) => format!("EndpointSlice/{}", ns(&s.metadata)),
            Object::NetworkPolicy(p) => format!("NetworkPolicy/{}", ns(&p.metadata)),
            Object::Other { kind, name } => format!("{kind}/{name}"),
        }
    }
}

/// Most documents and list items read from one file (a bound on what one file may
/// make us hold).
pub const MAX_OBJECTS: usize = 1_000_000;

/// Read every object of `source`. Errors name the file and the object (or the YAML
/// position); every error of the file is returned, not just the first.
///
/// # Errors
/// YAML that does not parse, a document without `kind`, or an object that does not
/// match its kind's schema.
pub fn parse(source: &Source<'_>) -> Result<Vec<Located>, Vec<ConfigError>> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(source.text).map_err(|e| vec![ConfigError::syntax(source.name, &e.to_string())])?;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut pending: std::collections::VecDeque<(String, Value)> =
        docs.into_iter().enumerate().map(|(i, doc)| (format!("document {}", i + 1), doc)).collect();
    // Lists flatten into their items (in order), which may be lists again.
    while let Some((place, mut doc)) = pending.pop_front() {
        if out.len() + pending.len() > MAX_OBJECTS {
            errors.push(ConfigError::field(
                source.name,
                &place,
                "items",
                None,
                "more than 1,000,000 objects in one file",
            ));
            break;
        }
        if doc.is_null() {
            continue; // an empty document (a trailing `---`)
        }
        let name = doc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
        let Some(kind) = doc.get("kind").and_then(Value::as_str).map(str::to_string) else {
            errors.push(ConfigError::field(source.name, &place, "kind", None, "missing: not a Kubernetes object"));
            continue;
        };
        if kind == "List" || kind.ends_with("List") {
            let items = match doc.get_mut("items").map(Value::take) {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            };
            for (k, item) in items.into_iter().enumerate().rev() {
                pending.push_front((format!("{place} ({kind}) items[{k}]"), item));
            }
            continue;
        }
        let label = format!("{kind}/{name}");
        let typed = |r: Result<Object, serde_json::Error>| {
            r.map_err(|e| ConfigError::field(source.name, &label, "", None, &format!("not a valid {kind}: {e}")))
        };
        let object = match kind.as_str() {
            "Node" => typed(serde_json::from_value::<Node>(doc).map(|n| Object::Node(Box::new(n)))),
            "Service" => typed(serde_json::from_value::<Service>(doc).map(|n| Object::Service(Box::new(n)))),
            "EndpointSlice" => {
                typed(serde_json::from_value::<EndpointSlice>(doc).map(|n| Object::EndpointSlice(Box::new(n))))
            }
            "NetworkPolicy" => {
                typed(serde_json::from_value::<NetworkPolicy>(doc).map(|n| Object::NetworkPolicy(Box::new(n))))
            }
            _ => Ok(Object::Other { kind: kind.clone(), name }),
        };
        match object {
            Ok(object) => out.push(Located { file: source.name.to_string(), object }),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}
