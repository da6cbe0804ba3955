//! The control plane's mutual TLS (issue 11): every registry node serves gRPC with its
//! certificate and asks callers for theirs; nodes, edges and admin tools connect with their
//! own. One CA signs them all; who a caller is comes from its certificate
//! ([`crate::identity`]). Without TLS a node serves plaintext, which config allows only on a
//! loopback address.
//!
//! ```toml
//! [registry.tls]            # or [edge.registry.tls], for an edge's proposals and watch
//! ca = "ca.pem"             # the cluster's CA: a peer's certificate must be signed by it
//! cert = "node.pem"         # this process's certificate (chain), PEM
//! key = "node.key"          # its private key, PEM; refused if group or others may read it
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Where a process's control-plane certificates are.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Certificates loaded and checked, ready for servers and clients.
#[derive(Clone)]
pub struct Tls {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.write_str("Tls { .. }")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: the private key may be read by others (mode {1:o}); chmod 600 it")]
    KeyReadable(PathBuf, u32),
    #[error("{0}: {1}")]
    Bad(PathBuf, String),
}

impl Tls {
    /// Read and check the files: PEM that holds what it should, a key only its owner reads.
    pub fn load(f: &TlsFiles) -> Result<Tls, TlsError> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| TlsError::Read(p.into(), e));
        let tls = Tls {
            ca: read(&f.ca)?,
            cert: read(&f.cert)?,
            key: read_private(&f.key)?,
        };
        let certs = |b: &[u8]| {
            rustls_pemfile::certs(&mut &b[..])
                .filter(Result::is_ok)
                .count()
        };
        if certs(&tls.ca) == 0 {
            return Err(TlsError::Bad(f.ca.clone(), "no PEM certificate".into()));
        }
        if certs(&tls.cert) == 0 {
            return Err(TlsError::Bad(f.cert.clone(), "no PEM certificate".into()));
        }
        match rustls_pemfile::private_key(&mut &tls.key[..]) {
            Ok(Some(_)) => {}
            _ => return Err(TlsError::Bad(f.key.clone(), "no PEM private key".into())),
        }
        Ok(tls)
    }

    /// A client that trusts the CA at `ca` and shows no certificate of its own (it shows a
    /// bearer token instead: the admin API only).
    pub fn ca_only(ca: &Path) -> Result<Tls, TlsError> {
        let pem = std::fs::read(ca).map_err(|e| TlsError::Read(ca.into(), e))?;
        if rustls_pemfile::certs(&mut &pem[..])
            .filter(Result::is_ok)
            .count()
            == 0
        {
            return Err(TlsError::Bad(ca.into(), "no PEM certificate".into()));
        }
        Ok(Tls {
            ca: pem,
            cert: vec![],
            key: vec![],
        })
    }

    /// From PEM held in memory (tests, `orbitd dev`).
    pub fn from_pem(ca: &str, cert: &str, key: &str) -> Tls {
        Tls {
            ca: ca.as_bytes().to_vec(),
            cert: cert.as_bytes().to_vec(),
            key: key.as_bytes().to_vec(),
        }
    }

    /// A server that presents our certificate and asks every caller for one signed by the CA.
    /// A caller without one still gets through the handshake, so that it is told why it is
    /// refused (UNAUTHENTICATED) rather than seeing the connection drop.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert, &self.key))
            .client_ca_root(Certificate::from_pem(&self.ca))
            .client_auth_optional(true)
    }

    /// A client that trusts only the CA and presents our certificate.
    pub(crate) fn client(&self) -> ClientTlsConfig {
        let c = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca));
        if self.cert.is_empty() {
            return c; // [`Tls::ca_only`]
        }
        c.identity(Identity::from_pem(&self.cert, &self.key))
    }
}

/// A private key file's contents, refused if anyone but its owner may read it (checked on
/// the file opened, so that it cannot be swapped between the check and the read). For every
/// key Orbit reads: the control plane's and the SIP listener's.
pub fn read_private(p: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let err = |e| TlsError::Read(p.into(), e);
    let mut f = std::fs::File::open(p).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = f.metadata().map_err(err)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(TlsError::KeyReadable(p.into(), mode & 0o777));
        }
    }
    let mut key = vec![];
    f.read_to_end(&mut key).map_err(err)?;
    Ok(key)
}

/// Where `orbitd dev` leaves an admin certificate that command-line clients run from the same
/// directory use without flags.
pub const DEV_ADMIN_DIR: &str = "./orbit-data/pki";

/// The certificate a command-line client shows: the three files given, or else the admin
/// certificate `orbitd dev` made under [`DEV_ADMIN_DIR`] if it is there; none: plaintext.
pub fn cli_tls(
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<Tls>, TlsError> {
    let files = match (ca, cert, key) {
        (Some(ca), Some(cert), Some(key)) => TlsFiles {
            ca: ca.into(),
            cert: cert.into(),
            key: key.into(),
        },
        _ => {
            let dir = Path::new(DEV_ADMIN_DIR);
            if !dir.join("admin.pem").exists() {
                return Ok(None);
            }
            TlsFiles {
                ca: dir.join("ca.pem"),
                cert: dir.join("admin.pem"),
                key: dir.join("admin.key"),
            }
        }
    };
    Tls::load(&files).map(Some)
}
