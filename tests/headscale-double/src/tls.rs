//! The double's TLS: a CA made on first start under `DIR/tls/`, and a
//! server certificate it signs for `127.0.0.1`, `::1` and `localhost`.
//! The CA's certificate is what a bundle carries as the login server's
//! `ca_cert`; the stub hands it to tailscaled as `SSL_CERT_FILE`, so the
//! real client checks the control server and the DERP relay against it,
//! as it would an air-gapped site's own CA.

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub fn ca_path(db: &Path) -> PathBuf {
    db.join("tls/ca.pem")
}

/// The server's chain and key, made once and kept.
pub fn load_or_make(db: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let dir = db.join("tls");
    let (cert_p, key_p) = (dir.join("server.der"), dir.join("server.key.der"));
    if !cert_p.is_file() || !key_p.is_file() || !ca_path(db).is_file() {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let ca_key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        ca.distinguished_name.push(rcgen::DnType::CommonName, "nxs headscale-double TEST CA");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).map_err(|e| e.to_string())?;
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).map_err(|e| e.to_string())?;
        p.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().expect("an address")));
        p.subject_alt_names.push(rcgen::SanType::IpAddress("::1".parse().expect("an address")));
        p.distinguished_name.push(rcgen::DnType::CommonName, "headscale-double");
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p.signed_by(&key, &ca_cert, &ca_key).map_err(|e| e.to_string())?;
        let w = |p: &Path, b: &[u8]| std::fs::write(p, b).map_err(|e| format!("{}: {e}", p.display()));
        w(&key_p, &key.serialize_der())?;
        w(&cert_p, cert.der())?;
        w(&ca_path(db), ca_cert.pem().as_bytes())?;
    }
    let cert = std::fs::read(&cert_p).map_err(|e| format!("{}: {e}", cert_p.display()))?;
    let key = std::fs::read(&key_p).map_err(|e| format!("{}: {e}", key_p.display()))?;
    Ok((vec![CertificateDer::from(cert)], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key))))
}

pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    // ring offers no post-quantum key exchange; none is needed on loopback.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    // The control upgrade and DERP are HTTP/1.1; no ALPN is offered.
    c.alpn_protocols.clear();
    Ok(Arc::new(c))
}
