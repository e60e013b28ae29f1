//! The embedding API for a node agent (a CNI plugin's daemon, a kube-proxy
//! replacement): it watches the API server and hands podplane each object as it
//! changes, instead of writing files.
//!
//! ```text
//!  watch events ──> Agent::apply(Object) / Agent::delete(kind, key)
//!                     ├─ Service, EndpointSlice: ServiceStore → service table, O(that service)
//!                     └─ Node: the node's configuration again (routes, peers), O(nodes)
//!  Agent::dataplane().pipeline() ──> the driver runs batches; Agent::counters() to read
//! ```
//!
//! Every change is checked first: a refused object leaves the running configuration
//! as it was, and the error names the object and field.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;

use super::file::NodeFile;
use super::objects::{Located, Object};
use super::services::{PortChange, ServiceStore};
use super::{Applied, ConfigError, ConfigErrors, Dataplane, Source};
use crate::pipeline::CounterSnapshot;

/// A node's dataplane driven by Kubernetes objects; see the [module docs](self).
#[derive(Debug)]
pub struct Agent {
    file_name: String,
    file: NodeFile,
    nodes: BTreeMap<String, Node>,
    store: ServiceStore,
    dp: Dataplane,
}

fn errs(file: &str, object: &str, field: &str, problem: &str) -> ConfigErrors {
    ConfigErrors(vec![ConfigError::field(file, object, field, None, problem)])
}

impl Agent {
    /// A node from its node file (and the `Node` objects known at start), its RNG
    /// seeded with `seed`.
    ///
    /// # Errors
    /// Every error of the node file and objects.
    pub fn new(node: Source<'_>, nodes: Vec<Node>, seed: u64) -> Result<Self, ConfigErrors> {
        let file: NodeFile = serde_saphyr::from_str(node.text)
            .map_err(|e| ConfigErrors(vec![ConfigError::syntax(node.name, &e.to_string())]))?;
        let nodes: BTreeMap<String, Node> =
            nodes.into_iter().map(|n| (n.metadata.name.clone().unwrap_or_default(), n)).collect();
        let setup = Self::build(node.name, &file, &nodes)?;
        let store = ServiceStore::new(setup.node_view.clone());
        Ok(Agent { file_name: node.name.to_string(), file, nodes, store, dp: Dataplane::new(setup, seed) })
    }

    fn build(name: &str, file: &NodeFile, nodes: &BTreeMap<String, Node>) -> Result<super::NodeSetup, ConfigErrors> {
        let objects: Vec<Located> =
            nodes.values().map(|n| Located { file: "api".into(), object: Object::Node(Box::new(n.clone())) }).collect();
        super::node::build(name, file, &objects).map_err(ConfigErrors)
    }

    /// Apply an added or changed object.
    ///
    /// # Errors
    /// The object's errors; nothing is changed then.
    pub fn apply(&mut self, object: Object) -> Result<Applied, ConfigErrors> {
        match object {
            Object::Service(s) => {
                let changes = self.store.apply_service(*s).map_err(ConfigErrors)?;
                Ok(self.ports(&changes))
            }
            Object::EndpointSlice(s) => {
                let changes = self.store.apply_slice(*s).map_err(ConfigErrors)?;
                Ok(self.ports(&changes))
            }
            Object::Node(n) => {
                let name = n.metadata.name.clone().unwrap_or_default();
                let before = self.nodes.insert(name.clone(), *n);
                self.renode().inspect_err(|_| {
                    match before {
                        Some(b) => self.nodes.insert(name.clone(), b),
                        None => self.nodes.remove(&name),
                    };
                })
            }
            other => Err(errs("api", &other.label(), "kind", "not a kind the agent applies")),
        }
    }

    /// Apply a deleted object: `kind` is `Service`, `EndpointSlice` or `Node`, `key`
    /// its `namespace/name` (`name` for a Node).
    ///
    /// # Errors
    /// An unknown kind, or a node configuration that no longer checks without the
    /// Node (it is kept then).
    pub fn delete(&mut self, kind: &str, key: &str) -> Result<Applied, ConfigErrors> {
        match kind {
            "Service" => {
                let changes = self.store.delete_service(key);
                Ok(self.ports(&changes))
            }
            "EndpointSlice" => {
                let changes = self.store.delete_slice(key);
                Ok(self.ports(&changes))
            }
            "Node" => {
                let Some(before) = self.nodes.remove(key) else { return Ok(Applied::default()) };
                self.renode().inspect_err(|_| {
                    self.nodes.insert(key.to_string(), before);
                })
            }
            other => Err(errs("api", &format!("{other}/{key}"), "kind", "not a kind the agent applies")),
        }
    }

    fn ports(&mut self, changes: &[PortChange]) -> Applied {
        let (n, flushed) = self.dp.apply_ports(changes);
        Applied { service_changes: n, flushed, ..Applied::default() }
    }

    /// The node's configuration again from its file and the Nodes, keeping the
    /// services (compiled again only if the node's own view of them changed).
    fn renode(&mut self) -> Result<Applied, ConfigErrors> {
        let mut new = Self::build(&self.file_name, &self.file, &self.nodes)?;
        if new.node_view == self.dp.setup().node_view {
            new.services = self.dp.setup().services.clone();
        } else {
            let mut store = ServiceStore::new(new.node_view.clone());
            store.copy_objects_from(&self.store).map_err(ConfigErrors)?;
            new.services = store.ports().into_iter().map(|p| (p.name.clone(), p)).collect();
            self.store = store;
        }
        self.dp.apply(new).map_err(|e| errs(&self.file_name, "NodeConfig", "routes", &e.to_string()))
    }

    /// The dataplane, for the driver to run batches through.
    pub fn dataplane(&mut self) -> &mut Dataplane {
        &mut self.dp
    }

    /// The services as applied.
    pub fn services(&self) -> &ServiceStore {
        &self.store
    }

    /// The counters of every stage (drops with reasons, events).
    pub fn counters(&mut self) -> CounterSnapshot {
        self.dp.pipeline().counters().snapshot()
    }
}
