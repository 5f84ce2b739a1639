//! The TLS files of `redis.*`: read, checked to be PEM of the right kind,
//! and validated together.

use super::*;

/// The contents of the TLS files a [`RedisSettings`] names, checked to be PEM.
#[derive(Clone)]
pub struct TlsFiles {
    /// The CA certificates (`tls_ca_file`).
    pub ca: Option<Vec<u8>>,
    /// The client's certificate chain and private key (`tls_cert_file`, `tls_key_file`).
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is a secret; the certificates are just long.
        f.debug_struct("TlsFiles")
            .field("ca", &self.ca.as_ref().map(|_| "<pem>"))
            .field("client", &self.client.as_ref().map(|_| "<pem>"))
            .finish()
    }
}

/// A TLS file setting that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{key}{}: {reason}", path.as_ref().map(|p| format!(" = {}", p.display())).unwrap_or_default())]
pub struct TlsFileError {
    /// The setting, as a dotted key.
    pub key: &'static str,
    /// The file it names, when the file is the problem.
    pub path: Option<PathBuf>,
    /// What is wrong and what to do.
    pub reason: String,
}

impl TlsFileError {
    pub(super) fn new(key: &'static str, path: &Path, reason: String) -> Self {
        Self {
            key,
            path: Some(path.to_path_buf()),
            reason,
        }
    }
}

/// What a PEM file named by a setting must hold.
#[derive(Debug, Clone, Copy)]
pub(super) enum PemKind {
    /// One or more `CERTIFICATE` blocks.
    Certificates,
    /// One private key (PKCS#8, PKCS#1 or SEC1).
    PrivateKey,
}

/// Reads `path` and checks that it holds what `kind` asks for.
pub(super) fn read_pem(path: &Path, kind: PemKind) -> Result<Vec<u8>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read the file: {e}"))?;
    match kind {
        PemKind::Certificates => {
            let certs = CertificateDer::pem_slice_iter(&bytes)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("not a PEM certificate file: {e}"))?;
            if certs.is_empty() {
                return Err(
                    "holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)".into(),
                );
            }
        }
        PemKind::PrivateKey => {
            PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
                format!("holds no PEM private key (expected -----BEGIN PRIVATE KEY-----): {e}")
            })?;
        }
    }
    Ok(bytes)
}

/// The TLS file settings: each file readable and PEM of the right kind,
/// certificate and key together, and only on a TLS connection.
pub(super) fn validate_tls_files(
    r: &RedisSettings,
    url: &str,
    bad: &mut impl FnMut(&str, String, &str),
) {
    let shown = |p: &Path| format!("{:?}", p.display().to_string());
    for (key, path, kind) in [
        ("redis.tls_ca_file", &r.tls_ca_file, PemKind::Certificates),
        (
            "redis.tls_cert_file",
            &r.tls_cert_file,
            PemKind::Certificates,
        ),
        ("redis.tls_key_file", &r.tls_key_file, PemKind::PrivateKey),
    ] {
        if let Some(p) = path
            && let Err(why) = read_pem(p, kind)
        {
            bad(key, shown(p), &why);
        }
    }
    match (&r.tls_cert_file, &r.tls_key_file) {
        (Some(p), None) => bad(
            "redis.tls_cert_file",
            shown(p),
            "needs redis.tls_key_file, the certificate's private key",
        ),
        (None, Some(p)) => bad(
            "redis.tls_key_file",
            shown(p),
            "needs redis.tls_cert_file, the certificate of this key",
        ),
        _ => {}
    }
    if r.has_tls_files() && !url.starts_with("rediss://") {
        let (key, p) = [
            ("redis.tls_ca_file", &r.tls_ca_file),
            ("redis.tls_cert_file", &r.tls_cert_file),
            ("redis.tls_key_file", &r.tls_key_file),
        ]
        .into_iter()
        .find_map(|(k, p)| p.as_deref().map(|p| (k, p)))
        .expect("one is set");
        bad(
            key,
            shown(p),
            "is for TLS, but the connection is not: use a rediss:// URL (or redis.tls: true)",
        );
    }
}
