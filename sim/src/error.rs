//! Errors of scenario set-up and runs. Each names the item at fault; run failures
//! carry the seed and say how to re-run.

use thiserror::Error;

/// What went wrong in a simulation.
#[derive(Debug, Error)]
pub enum SimError {
    /// Two things share a name that must be unique.
    #[error("duplicate {kind} name {name:?}")]
    DuplicateName {
        /// What kind of thing ("host", "node", "link", "pod").
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A link end names a port the entity does not have, or is already wired.
    #[error("link {link:?}: {reason}")]
    BadLink {
        /// Link name.
        link: String,
        /// What is wrong.
        reason: String,
    },
    /// A host's configuration is invalid.
    #[error("host {host:?}: {reason}")]
    BadHost {
        /// Host name.
        host: String,
        /// What is wrong.
        reason: String,
    },
    /// A cluster plan is invalid.
    #[error("cluster: {0}")]
    Cluster(String),
    /// A capture file could not be written.
    #[error("capture {path}: {reason}")]
    Capture {
        /// File path.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// The run hit its step bound or deadline before the workloads finished.
    #[error("scenario did not finish: {reason} (seed {seed}; re-run with PODPLANE_SEED={seed})")]
    Unfinished {
        /// The seed of the run.
        seed: u64,
        /// Why it stopped.
        reason: String,
    },
}
