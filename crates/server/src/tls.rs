//! The server's own certificate authority and TLS configuration.
//!
//! On first start the server creates a CA (ECDSA P-256) and keeps it in the store, so every
//! replica of a PostgreSQL deployment serves under the same CA. At each start a replica issues
//! itself a fresh server certificate from that CA, naming `localhost`, the loopback addresses,
//! the host name and any `--san` the operator adds. Agents pin the CA at enrollment: the
//! enrollment token carries the CA's SHA-256 fingerprint.

use std::sync::Arc;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::Store;

const CA_META_KEY: &str = "ca";

/// The CA certificate and key, as stored.
#[derive(Clone, Serialize, Deserialize)]
pub struct CaMaterial {
    /// Common name of the CA (unique per server installation).
    pub common_name: String,
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// The CA private key, PEM (PKCS#8).
    key_pem: String,
}

impl std::fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaMaterial({})", self.common_name)
    }
}

fn ca_params(common_name: &str) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Rampart");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365 * 20);
    Ok(params)
}

impl CaMaterial {
    /// Creates a new CA.
    pub fn generate() -> Result<CaMaterial> {
        let key = KeyPair::generate().context("generating the CA key")?;
        let common_name = format!("Rampart CA {}", &crate::secrets::random_hex(6));
        let cert = ca_params(&common_name)?.self_signed(&key)?;
        Ok(CaMaterial {
            common_name,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Reads the store's CA, creating it on the first start of the first replica.
    pub async fn load_or_create(store: &Store) -> Result<CaMaterial> {
        if let Some(stored) = store.meta_get(CA_META_KEY).await? {
            return serde_json::from_str(&stored).context("reading the stored CA");
        }
        let fresh = serde_json::to_string(&CaMaterial::generate()?)?;
        let stored = store.meta_put_if_absent(CA_META_KEY, &fresh).await?;
        serde_json::from_str(&stored).context("reading the stored CA")
    }

    /// SHA-256 of the CA certificate's DER encoding, hex: what enrollment tokens carry.
    pub fn fingerprint(&self) -> Result<String> {
        fingerprint_pem(&self.cert_pem)
    }

    /// Issues a server certificate for `names` (DNS names or IP addresses).
    /// Returns (certificate chain PEM: server then CA, server key PEM).
    pub fn issue_server_certificate(&self, names: &[String]) -> Result<(String, String)> {
        let ca_key = KeyPair::from_pem(&self.key_pem).context("reading the CA key")?;
        // Re-creating the issuer from its name and key is all signing needs.
        let issuer = ca_params(&self.common_name)?.self_signed(&ca_key)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Rampart");
        dn.push(DnType::CommonName, "Rampart management server");
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(397);
        let cert = params.signed_by(&key, &issuer, &ca_key)?;
        Ok((
            format!("{}{}", cert.pem(), self.cert_pem),
            key.serialize_pem(),
        ))
    }
}

/// SHA-256 of the first certificate in `pem`, hex.
pub fn fingerprint_pem(pem: &str) -> Result<String> {
    let der = rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .context("no certificate in PEM")??;
    Ok(hex::encode(Sha256::digest(der.as_ref())))
}

/// The rustls configuration serving `chain_pem` with `key_pem`, HTTP/2 and HTTP/1.1.
pub fn server_config(chain_pem: &str, key_pem: &str) -> Result<Arc<rustls::ServerConfig>> {
    let certs = rustls_pemfile::certs(&mut chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("reading the server certificate")?;
    let key =
        rustls_pemfile::private_key(&mut key_pem.as_bytes())?.context("no private key in PEM")?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn issued_certificate_chains_to_the_ca() {
        let ca = CaMaterial::generate().unwrap();
        let (chain, key) = ca
            .issue_server_certificate(&["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        server_config(&chain, &key).unwrap();
        // verify with webpki through rustls' verifier
        let mut roots = rustls::RootCertStore::empty();
        let ca_der = rustls_pemfile::certs(&mut ca.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        roots.add(ca_der).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let certs: Vec<_> = rustls_pemfile::certs(&mut chain.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        verifier
            .verify_server_cert(
                &certs[0],
                &certs[1..],
                &name,
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .unwrap();
        assert_eq!(ca.fingerprint().unwrap().len(), 64);
    }
}
