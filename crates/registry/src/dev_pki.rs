//! A CA and the certificates of a cluster on one machine (`orbitd dev`, the tests): one CA,
//! then per process a certificate naming its identity ([`Caller::spiffe_id`]) and the host
//! names a client reaches it by. Real deployments bring their own (cert-manager, say); what
//! they need in a certificate is the same SPIFFE ID.

use std::io::Write;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};

use crate::identity::Caller;
use crate::tls::{Tls, TlsFiles};

/// A CA that signs a cluster's certificates.
pub struct DevCa {
    /// The CA's certificate as signing needs it (re-made from the PEM for a CA read back).
    cert: rcgen::Certificate,
    /// The CA's certificate as written and trusted.
    pem: String,
    key: KeyPair,
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

impl DevCa {
    /// A new CA.
    pub fn new() -> Result<DevCa, PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Orbit dev CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(DevCa {
            pem: cert.pem(),
            cert,
            key,
        })
    }

    /// The CA in `dir` (`ca.pem`, `ca.key`), made there first if it is not.
    pub fn in_dir(dir: &Path) -> Result<DevCa, PkiError> {
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        let io = |p: &Path| {
            let p = p.display().to_string();
            move |e| PkiError::Io(p, e)
        };
        if cert_path.exists() && key_path.exists() {
            let pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
            let key = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
            let key = KeyPair::from_pem(&key)?;
            let cert = CertificateParams::from_ca_cert_pem(&pem)?.self_signed(&key)?;
            return Ok(DevCa { cert, pem, key });
        }
        let ca = DevCa::new()?;
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        write_private(&key_path, &ca.key.serialize_pem()).map_err(io(&key_path))?;
        write_private(&cert_path, &ca.pem).map_err(io(&cert_path))?;
        Ok(ca)
    }

    pub fn ca_pem(&self) -> String {
        self.pem.clone()
    }

    /// A certificate for `who`, also valid as a server at `hosts` (IP addresses or DNS
    /// names): (certificate PEM, key PEM).
    pub fn issue(&self, who: &Caller, hosts: &[&str]) -> Result<(String, String), PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, who.spiffe_id());
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(who.spiffe_id().try_into()?)];
        for h in hosts {
            params.subject_alt_names.push(match h.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*h).try_into()?),
            });
        }
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// [`DevCa::issue`], ready to use.
    pub fn tls(&self, who: &Caller, hosts: &[&str]) -> Result<Tls, PkiError> {
        let (cert, key) = self.issue(who, hosts)?;
        Ok(Tls::from_pem(&self.ca_pem(), &cert, &key))
    }

    /// [`DevCa::issue`], written to `dir` as `<name>.pem` and `<name>.key` (0600) beside the
    /// CA's `ca.pem`.
    pub fn write(
        &self,
        dir: &Path,
        name: &str,
        who: &Caller,
        hosts: &[&str],
    ) -> Result<TlsFiles, PkiError> {
        let (cert, key) = self.issue(who, hosts)?;
        let files = TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        let io = |p: &Path| {
            let p = p.display().to_string();
            move |e| PkiError::Io(p, e)
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        if !files.ca.exists() {
            write_private(&files.ca, &self.ca_pem()).map_err(io(&files.ca))?;
        }
        write_private(&files.key, &key).map_err(io(&files.key))?;
        write_private(&files.cert, &cert).map_err(io(&files.cert))?;
        Ok(files)
    }
}

/// Write `text` to a file only its owner may read (created so: never readable by others, not
/// even for a moment).
pub fn write_private(p: &Path, text: &str) -> std::io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        o.mode(0o600);
        let mut f = o.open(p)?;
        // An existing file keeps its mode through open: make it private too.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        return f.write_all(text.as_bytes());
    }
    #[allow(unreachable_code)]
    o.open(p)?.write_all(text.as_bytes())
}
